//! The `dmthin` command-line tool.
fn main() {
    println!("dmthin {}", env!("CARGO_PKG_VERSION"));
}

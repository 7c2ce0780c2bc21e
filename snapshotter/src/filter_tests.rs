use super::*;

fn snap<'a>(
    kind: &'a str,
    name: &'a str,
    parent: &'a str,
    labels: &'a HashMap<String, String>,
) -> SnapshotFields<'a> {
    SnapshotFields {
        kind,
        name,
        parent,
        labels,
    }
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn m(filters: &[&str], f: &SnapshotFields) -> bool {
    Filter::parse_all(filters).unwrap().matches(f)
}

#[test]
fn conformance_suite_filters() {
    let gc = labels(&[("containerd.io/gc.root", "check-walk")]);
    let gc_l2 = labels(&[("containerd.io/gc.root", "check-walk"), ("l", "2")]);
    let a = snap("active", "a", "p", &gc);
    let a_np = snap("active", "a-np", "", &gc);
    let a_wl = snap("active", "a-wl", "p-wl", &gc_l2);
    let p = snap("committed", "p", "", &gc);
    let f = r#"labels."containerd.io/gc.root"==check-walk"#;
    assert!(m(&[f], &a) && m(&[f], &p));
    let f = r#"kind==active,labels."containerd.io/gc.root"==check-walk"#;
    assert!(m(&[f], &a) && !m(&[f], &p));
    assert!(m(&["name==p", "name==a-np-wl"], &p));
    assert!(!m(&["name==p", "name==a-np-wl"], &a));
    assert!(m(&["name==a-wl,labels.l"], &a_wl));
    assert!(!m(&["name==a-wl,labels.l"], &a));
    assert!(m(&["parent==p"], &a) && !m(&["parent==p"], &a_np));
    let f = r#"parent!="",labels."containerd.io/gc.root"==check-walk"#;
    assert!(m(&[f], &a) && !m(&[f], &a_np) && !m(&[f], &p));
    assert!(m(&["labels.l==2"], &a_wl) && !m(&["labels.l==2"], &a));
    assert!(m(&["labels.l"], &a_wl) && !m(&["labels.l"], &a));
}

#[test]
fn empty_filters_match_everything() {
    let none = HashMap::new();
    let s = snap("view", "v", "", &none);
    assert!(m(&[], &s));
    assert!(m(&[""], &s));
}

#[test]
fn regex_and_alternative_quotes() {
    let none = HashMap::new();
    let s = snap("active", "default/3/sha256:abc", "", &none);
    assert!(m(&["name~=sha256"], &s));
    assert!(m(&["name~=/^default\\/[0-9]+\\//"], &s));
    assert!(m(&["name~=|abc$|"], &s));
    assert!(!m(&["name~=^x"], &s));
    // Alternative quotes are only for regular expressions.
    assert!(Filter::parse_all(&["name==/x/"]).is_err());
}

#[test]
fn dotted_label_keys_join_and_quoted_escapes() {
    let l = labels(&[("a.b.c", "x y"), ("q\"k", "v")]);
    let s = snap("active", "n", "", &l);
    assert!(m(&["labels.a.b.c==\"x y\""], &s));
    assert!(m(&[r#"labels."q\"k"==v"#], &s));
    assert!(m(&[r#"labels."a.b.c"=="\x78 y""#], &s));
    assert!(m(&["  name == n "], &s), "spaces around operators");
}

#[test]
fn absent_fields() {
    let none = HashMap::new();
    let s = snap("active", "n", "", &none);
    // Not-equal on an absent field compares with "".
    assert!(m(&["labels.x!=1"], &s));
    assert!(!m(&["labels.x==1"], &s));
    assert!(!m(&["bogus"], &s));
    assert!(m(&["bogus!=1"], &s));
}

#[test]
fn malformed_filters_are_errors() {
    for bad in [
        "name=",
        "name===x",
        "name==\"x",
        ",",
        "name==x,",
        "name==x y",
        "labels.\"a\\q\"",
        "name~=(",
        "name==a\0b",
        ".name",
        "name=>x",
    ] {
        assert!(Filter::parse_all(&[bad]).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn unquote_escapes() {
    assert_eq!(unquote(r#""a\tb\n\\\"""#).unwrap(), "a\tb\n\\\"");
    assert_eq!(unquote(r#""\101\x42\u0043\U00000044""#).unwrap(), "ABCD");
    assert_eq!(unquote("/a\\/b/").unwrap(), "a/b");
    assert!(unquote(r#""\q""#).is_err());
    assert!(unquote(r#""\x4""#).is_err());
}

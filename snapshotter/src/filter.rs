//! containerd's filter syntax (`github.com/containerd/containerd/filters`), for Walk.
//!
//! A request carries a list of filters; a snapshot matches when any one of
//! them matches. A filter is a comma-separated list of selectors that must
//! all match. A selector is a field path (`kind`, `name`, `parent`,
//! `labels.KEY`; components are separated by `.` and may be quoted with
//! `"..."`), optionally followed by an operator (`==`, `!=`, `~=` for a
//! regular expression) and a value (bare, or quoted with `"`, or for `~=`
//! also `/.../` and `|...|`). A selector without an operator tests that the
//! field is present. The scanner follows containerd's rune for rune, so the
//! same strings parse the same way.

use std::collections::HashMap;

/// The fields a filter can look at.
pub trait Fields {
    /// The value of `path`, or `None` when the field is absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Present,
    Equal,
    NotEqual,
    Matches,
}

#[derive(Debug)]
struct Selector {
    path: Vec<String>,
    op: Op,
    value: String,
    re: Option<regex_lite::Regex>,
}

impl Selector {
    fn matches(&self, f: &dyn Fields) -> bool {
        let value = f.field(&self.path);
        match self.op {
            Op::Present => value.is_some(),
            Op::Equal => value.as_deref() == Some(self.value.as_str()),
            Op::NotEqual => value.as_deref().unwrap_or("") != self.value,
            Op::Matches => self
                .re
                .as_ref()
                .is_some_and(|re| re.is_match(value.as_deref().unwrap_or(""))),
        }
    }
}

/// A parsed list of filters: any of them (each: all of its selectors).
#[derive(Debug, Default)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses every filter of a request; an empty list or empty strings match everything.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter, String> {
        let mut any = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.is_empty() {
                // containerd: an empty filter is "always".
                any.push(Vec::new());
                continue;
            }
            any.push(Parser::new(f).selectors()?);
        }
        Ok(Filter { any })
    }

    /// Whether `f` passes.
    pub fn matches(&self, f: &dyn Fields) -> bool {
        self.any.is_empty() || self.any.iter().any(|all| all.iter().all(|s| s.matches(f)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Eof,
    Quoted(String),
    Value(String),
    Field(String),
    Sep(char),
    Operator(String),
    Illegal(String),
    Other(char),
}

struct Scanner<'a> {
    input: &'a str,
    /// Byte offset of the next rune.
    ppos: usize,
    /// After an operator, the next token is a value.
    value: bool,
    err: Option<String>,
}

/// A rune or the end of input or an illegal rune.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ch {
    Eof,
    Illegal,
    C(char),
}

impl<'a> Scanner<'a> {
    fn next(&mut self) -> Ch {
        let Some(c) = self.input[self.ppos..].chars().next() else {
            return Ch::Eof;
        };
        self.ppos += c.len_utf8();
        if c == '\0' {
            self.error("unexpected null");
            return Ch::Illegal;
        }
        Ch::C(c)
    }

    fn peek(&mut self) -> Ch {
        let (p, e) = (self.ppos, self.err.clone());
        let c = self.next();
        self.ppos = p;
        self.err = e;
        c
    }

    fn error(&mut self, msg: &str) {
        self.err.get_or_insert_with(|| msg.to_string());
    }

    fn scan(&mut self) -> Tok {
        loop {
            let start = self.ppos;
            let ch = self.next();
            let c = match ch {
                Ch::Eof => return Tok::Eof,
                Ch::Illegal => return Tok::Illegal(self.err.clone().unwrap_or_default()),
                Ch::C(c) => c,
            };
            if matches!(c, '/' | '|' | '"') {
                return match self.scan_quoted(c) {
                    true => Tok::Quoted(self.input[start..self.ppos].to_string()),
                    false => Tok::Illegal(self.err.clone().unwrap_or_default()),
                };
            }
            if c == ',' || c == '.' {
                self.value = false;
                return Tok::Sep(c);
            }
            if matches!(c, '=' | '!' | '~') {
                while let Ch::C('=' | '!' | '~') = self.peek() {
                    self.next();
                }
                self.value = true;
                return Tok::Operator(self.input[start..self.ppos].to_string());
            }
            if c.is_whitespace() {
                continue;
            }
            if self.value {
                while let Ch::C(c) = self.peek() {
                    if !is_value_rune(c) {
                        break;
                    }
                    self.next();
                }
                self.value = false;
                return Tok::Value(self.input[start..self.ppos].to_string());
            }
            if is_field_rune(c) {
                while let Ch::C(c) = self.peek() {
                    if !is_field_rune(c) {
                        break;
                    }
                    self.next();
                }
                return Tok::Field(self.input[start..self.ppos].to_string());
            }
            return Tok::Other(c);
        }
    }

    fn scan_quoted(&mut self, quote: char) -> bool {
        loop {
            match self.next() {
                Ch::C(c) if c == quote => return self.err.is_none(),
                Ch::C('\n') | Ch::Eof | Ch::Illegal => {
                    self.error("quoted literal not terminated");
                    return false;
                }
                Ch::C('\\') => {
                    // Skip the escaped rune; unquote checks the escape.
                    if let Ch::Eof = self.next() {
                        self.error("quoted literal not terminated");
                        return false;
                    }
                }
                Ch::C(_) => {}
            }
        }
    }
}

fn is_field_rune(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn is_value_rune(c: char) -> bool {
    c != ',' && !c.is_whitespace() && !c.is_control()
}

/// Removes the quotes of `s` and resolves Go-style escapes.
fn unquote(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let quote = chars.next().ok_or("empty quoted string")?;
    let body: Vec<char> = chars.collect();
    if body.last() != Some(&quote) {
        return Err("unterminated quote".into());
    }
    let body = &body[..body.len() - 1];
    let mut out = String::new();
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = *body.get(i).ok_or("trailing backslash")?;
        i += 1;
        let simple = match e {
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'f' => Some('\x0c'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\x0b'),
            '\\' => Some('\\'),
            c if c == quote => Some(c),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            continue;
        }
        let (radix, n, from) = match e {
            '0'..='7' => (8, 3, i - 1),
            'x' => (16, 2, i),
            'u' => (16, 4, i),
            'U' => (16, 8, i),
            _ => return Err(format!("illegal escape \\{e}")),
        };
        let digits: String = body
            .get(from..from + n)
            .ok_or("short escape")?
            .iter()
            .collect();
        let v = u32::from_str_radix(&digits, radix).map_err(|_| "bad escape digits")?;
        out.push(char::from_u32(v).ok_or("escape is not a character")?);
        i = from + n;
    }
    Ok(out)
}

struct Parser<'a> {
    input: &'a str,
    sc: Scanner<'a>,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            sc: Scanner {
                input,
                ppos: 0,
                value: false,
                err: None,
            },
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("filters: parse error: [{}]: {msg}", self.input)
    }

    fn peek(&mut self) -> Tok {
        let (p, v, e) = (self.sc.ppos, self.sc.value, self.sc.err.clone());
        let t = self.sc.scan();
        (self.sc.ppos, self.sc.value, self.sc.err) = (p, v, e);
        t
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, String> {
        let mut all = vec![self.selector()?];
        loop {
            match self.sc.scan() {
                Tok::Sep(',') => all.push(self.selector()?),
                Tok::Eof => return Ok(all),
                t => return Err(self.err(format!("unexpected input: {t:?}"))),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, String> {
        let path = self.fieldpath()?;
        let op = match self.peek() {
            Tok::Sep(',') | Tok::Eof => {
                return Ok(Selector {
                    path,
                    op: Op::Present,
                    value: String::new(),
                    re: None,
                })
            }
            _ => match self.sc.scan() {
                Tok::Operator(s) if s == "==" => Op::Equal,
                Tok::Operator(s) if s == "!=" => Op::NotEqual,
                Tok::Operator(s) if s == "~=" => Op::Matches,
                Tok::Operator(s) => return Err(self.err(format!("unsupported operator {s:?}"))),
                _ => return Err(self.err("expected an operator (\"==\"|\"!=\"|\"~=\")")),
            },
        };
        let value = match self.sc.scan() {
            Tok::Value(s) | Tok::Field(s) => s,
            Tok::Quoted(s) => {
                if op != Op::Matches && !s.starts_with('"') {
                    return Err(self.err("invalid quote encountered"));
                }
                unquote(&s).map_err(|e| self.err(format!("unquoting failed: {e}")))?
            }
            Tok::Illegal(e) => return Err(self.err(e)),
            _ => return Err(self.err("expected value or quoted")),
        };
        let re = match op {
            Op::Matches => Some(
                regex_lite::Regex::new(&value)
                    .map_err(|e| self.err(format!("bad regular expression: {e}")))?,
            ),
            _ => None,
        };
        Ok(Selector {
            path,
            op,
            value,
            re,
        })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>, String> {
        let mut path = vec![self.field()?];
        while self.peek() == Tok::Sep('.') {
            self.sc.scan();
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> Result<String, String> {
        match self.sc.scan() {
            Tok::Field(s) => Ok(s),
            Tok::Quoted(s) if s.starts_with('"') => {
                unquote(&s).map_err(|e| self.err(format!("unquoting failed: {e}")))
            }
            Tok::Quoted(_) => Err(self.err("invalid quote encountered")),
            Tok::Illegal(e) => Err(self.err(e)),
            _ => Err(self.err("expected field or quoted")),
        }
    }
}

/// What Walk filters see of a snapshot.
pub struct SnapshotFields<'a> {
    /// `active`, `view` or `committed`.
    pub kind: &'a str,
    /// The key or name.
    pub name: &'a str,
    /// The parent's name ("" for none).
    pub parent: &'a str,
    /// Its labels.
    pub labels: &'a HashMap<String, String>,
}

impl Fields for SnapshotFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "kind" => Some(self.kind.to_string()),
            "name" => Some(self.name.to_string()),
            "parent" => Some(self.parent.to_string()),
            "labels" => {
                if self.labels.is_empty() {
                    return None;
                }
                self.labels.get(&path[1..].join(".")).cloned()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;

//! The syntax of Xen's domain configuration files, as `xl` reads them
//! (libxlutil's config grammar).
//!
//! A file is a series of statements, each ended by a newline or `;`:
//! `KEY = VALUE` sets a key, `KEY += VALUE` appends to it (string to
//! string, list to list). A value is an atom (a number, or a string in
//! single or double quotes with C-style backslash escapes) or a list
//! `[ VALUE, ... ]`, which may span lines and may end with a comma. `#`
//! starts a comment that runs to the end of the line. Atoms are kept as
//! text: whether `"512"` or `512` is a number is the key's business, as
//! in xl. Beyond xl, a backslash at the end of a line continues the
//! statement on the next one (Python's rule, which `xm`'s files used),
//! and keys may contain capitals.

use std::fmt;

/// A value as written: an atom's text, or a list.
///
/// Values compare by what they say, not by the line they are on.
#[derive(Debug, Clone, Eq)]
pub enum Value {
    /// A number or a string (quotes removed, escapes decoded).
    Atom {
        /// The text.
        text: String,
        /// Whether it was written in quotes.
        quoted: bool,
        /// The line it starts on (0: not from a file).
        line: u32,
    },
    /// `[ ... ]`.
    List(Vec<Value>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Atom { text: a, quoted: qa, .. }, Value::Atom { text: b, quoted: qb, .. }) => a == b && qa == qb,
            (Value::List(a), Value::List(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// A quoted string atom, from no file.
    pub fn string(text: impl Into<String>) -> Value {
        Value::Atom { text: text.into(), quoted: true, line: 0 }
    }

    /// The line an atom starts on in its file (`None` for lists and atoms not from a file).
    pub fn line(&self) -> Option<u32> {
        match self {
            Value::Atom { line, .. } if *line > 0 => Some(*line),
            _ => None,
        }
    }

    /// How the value reads in a message: an atom in double quotes, or "a list".
    pub fn describe(&self) -> String {
        match self {
            Value::Atom { text, .. } => format!("{text:?}"),
            Value::List(_) => "a list".to_owned(),
        }
    }
}

/// `=` or `+=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `KEY = VALUE`.
    Assign,
    /// `KEY += VALUE`.
    Append,
}

/// One statement of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The key.
    pub key: String,
    /// `=` or `+=`.
    pub op: Op,
    /// The value.
    pub value: Value,
    /// The line the key is on (from 1).
    pub line: u32,
}

/// A syntax error: the line, the key of the statement if it got that far, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// The line (from 1).
    pub line: u32,
    /// The key being set, if known.
    pub key: Option<String>,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {key}: {}", self.line, self.message),
            None => write!(f, "{}: {}", self.line, self.message),
        }
    }
}

/// Lists nest at most this deep (xl has no limit; this bounds the recursion).
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Number(String),
    Str(String),
    Assign,
    Append,
    Comma,
    Open,
    Close,
    Semi,
    Newline,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Number(s) => format!("number {s}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Assign => "'='".into(),
            Tok::Append => "'+='".into(),
            Tok::Comma => "','".into(),
            Tok::Open => "'['".into(),
            Tok::Close => "']'".into(),
            Tok::Semi => "';'".into(),
            Tok::Newline => "the end of the line".into(),
            Tok::Eof => "the end of the file".into(),
        }
    }
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer { src: src.as_bytes(), pos: 0, line: 1 }
    }

    fn peek_byte(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn err(&self, message: String) -> SyntaxError {
        SyntaxError { line: self.line, key: None, message }
    }

    /// The next token and the line it starts on.
    fn next(&mut self) -> Result<(Tok, u32), SyntaxError> {
        loop {
            match self.peek_byte() {
                Some(b' ' | b'\t' | b'\r') => self.pos += 1,
                Some(b'\\') if matches!(self.src.get(self.pos + 1), Some(b'\n')) => {
                    self.pos += 2;
                    self.line += 1;
                }
                Some(b'\\') if self.src.get(self.pos + 1..self.pos + 3) == Some(b"\r\n") => {
                    self.pos += 3;
                    self.line += 1;
                }
                Some(b'#') => {
                    while self.peek_byte().is_some_and(|b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
        let line = self.line;
        let Some(b) = self.peek_byte() else { return Ok((Tok::Eof, line)) };
        let tok = match b {
            b'\n' => {
                self.pos += 1;
                self.line += 1;
                Tok::Newline
            }
            b',' => self.one(Tok::Comma),
            b'[' => self.one(Tok::Open),
            b']' => self.one(Tok::Close),
            b';' => self.one(Tok::Semi),
            b'=' => self.one(Tok::Assign),
            b'+' if self.src.get(self.pos + 1) == Some(&b'=') => {
                self.pos += 2;
                Tok::Append
            }
            b'\'' | b'"' => Tok::Str(self.string(b)?),
            b'0'..=b'9' => {
                // As xl: a digit, then digits, hex letters and x (hex and octal numbers are the key's concern).
                Tok::Number(self.take(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c) || c == b'x'))
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                Tok::Ident(self.take(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.'))
            }
            _ => {
                let rest = std::str::from_utf8(&self.src[self.pos..]).unwrap_or("");
                let c = rest.chars().next().unwrap_or('?');
                let hint = if "-.():{}".contains(c) {
                    " (Python expressions are not supported: values are numbers, quoted strings and [lists])"
                } else {
                    ""
                };
                return Err(self.err(format!("unexpected character {c:?}{hint}")));
            }
        };
        Ok((tok, line))
    }

    fn one(&mut self, tok: Tok) -> Tok {
        self.pos += 1;
        tok
    }

    fn take(&mut self, ok: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.peek_byte().is_some_and(&ok) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
    }

    /// A quoted string starting at the quote `q`: escapes decoded, no newline inside.
    fn string(&mut self, q: u8) -> Result<String, SyntaxError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek_byte() else {
                return Err(self.err(format!("unterminated string (no closing {})", q as char)));
            };
            self.pos += 1;
            match c {
                b'\n' => return Err(self.err(format!("unterminated string (no closing {} on this line)", q as char))),
                _ if c == q => break,
                b'\\' => {
                    let Some(e) = self.peek_byte() else { continue };
                    self.pos += 1;
                    match e {
                        b'"' | b'\'' | b'\\' => out.push(e),
                        b'a' => out.push(7),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'v' => out.push(11),
                        b'x' => {
                            let digits = self.take_max(2, |c| c.is_ascii_hexdigit());
                            if digits.len() != 2 {
                                return Err(self.err("\\x in a string needs two hex digits".into()));
                            }
                            out.push(u8::from_str_radix(&digits, 16).unwrap_or(0));
                        }
                        b'0'..=b'7' => {
                            self.pos -= 1;
                            let digits = self.take_max(3, |c| (b'0'..=b'7').contains(&c));
                            match u8::from_str_radix(&digits, 8) {
                                Ok(v) => out.push(v),
                                Err(_) => return Err(self.err(format!("\\{digits} in a string is above \\377"))),
                            }
                        }
                        b'\n' => return Err(self.err("unterminated string (a backslash ends the line)".into())),
                        _ => {
                            return Err(self.err(format!(
                                "unknown escape \\{} in a string (known: \\\\ \\' \\\" \\n \\t \\r \\a \\b \\f \\v \\xHH \\NNN)",
                                e as char
                            )))
                        }
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("a string is not valid UTF-8".into()))
    }

    fn take_max(&mut self, max: usize, ok: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.pos - start < max && self.peek_byte().is_some_and(&ok) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
    }
}

fn err_at(line: u32, key: Option<&str>, message: String) -> SyntaxError {
    SyntaxError { line, key: key.map(str::to_owned), message }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    tok: Tok,
    line: u32,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Result<Self, SyntaxError> {
        let mut lex = Lexer::new(src);
        let (tok, line) = lex.next()?;
        Ok(Parser { lex, tok, line })
    }

    /// Moves to the next token; returns the current one and its line.
    fn bump(&mut self) -> Result<(Tok, u32), SyntaxError> {
        let (tok, line) = self.lex.next()?;
        let old_line = std::mem::replace(&mut self.line, line);
        Ok((std::mem::replace(&mut self.tok, tok), old_line))
    }

    fn skip_newlines(&mut self) -> Result<(), SyntaxError> {
        while self.tok == Tok::Newline {
            self.bump()?;
        }
        Ok(())
    }

    fn err(&self, key: Option<&str>, message: String) -> SyntaxError {
        err_at(self.line, key, message)
    }

    fn value(&mut self, key: &str, depth: usize) -> Result<Value, SyntaxError> {
        let (tok, line) = self.bump()?;
        match tok {
            Tok::Number(text) => Ok(Value::Atom { text, quoted: false, line }),
            Tok::Str(text) => Ok(Value::Atom { text, quoted: true, line }),
            Tok::Open => {
                if depth >= MAX_DEPTH {
                    return Err(err_at(line, Some(key), format!("lists nest deeper than {MAX_DEPTH}")));
                }
                let mut items = Vec::new();
                self.skip_newlines()?;
                loop {
                    if self.tok == Tok::Close {
                        self.bump()?;
                        return Ok(Value::List(items));
                    }
                    if self.tok == Tok::Eof {
                        return Err(err_at(line, Some(key), "unterminated list (no closing ']')".into()));
                    }
                    items.push(self.value(key, depth + 1)?);
                    self.skip_newlines()?;
                    match self.tok {
                        Tok::Comma => {
                            self.bump()?;
                            self.skip_newlines()?;
                        }
                        Tok::Close => {}
                        Tok::Eof => return Err(err_at(line, Some(key), "unterminated list (no closing ']')".into())),
                        ref other => {
                            return Err(self
                                .err(Some(key), format!("expected ',' or ']' in a list, found {}", other.describe())))
                        }
                    }
                }
            }
            Tok::Ident(word) => Err(err_at(
                line,
                Some(key),
                format!(
                    "expected a value (a number, a quoted string or a [list]), found '{word}' (strings need quotes)"
                ),
            )),
            other => Err(err_at(
                line,
                Some(key),
                format!("expected a value (a number, a quoted string or a [list]), found {}", other.describe()),
            )),
        }
    }

    fn statements(&mut self) -> Result<Vec<Statement>, SyntaxError> {
        let mut out = Vec::new();
        loop {
            match self.tok.clone() {
                Tok::Eof => return Ok(out),
                Tok::Newline | Tok::Semi => {
                    self.bump()?;
                }
                Tok::Ident(key) => {
                    let line = self.line;
                    self.bump()?;
                    let op = match self.bump()?.0 {
                        Tok::Assign => Op::Assign,
                        Tok::Append => Op::Append,
                        other => {
                            return Err(SyntaxError {
                                line,
                                key: Some(key),
                                message: format!("expected '=' after the key, found {}", other.describe()),
                            })
                        }
                    };
                    let value = self.value(&key, 0)?;
                    match self.tok {
                        Tok::Newline | Tok::Semi | Tok::Eof => {}
                        ref other => {
                            return Err(self.err(
                                Some(&key),
                                format!(
                                    "expected the end of the line or ';' after the value, found {}",
                                    other.describe()
                                ),
                            ))
                        }
                    }
                    out.push(Statement { key, op, value, line });
                }
                other => {
                    return Err(self.err(None, format!("expected a key (KEY = VALUE), found {}", other.describe())))
                }
            }
        }
    }
}

/// Parses a whole file into its statements, in order.
pub fn parse(src: &str) -> Result<Vec<Statement>, SyntaxError> {
    Parser::new(src)?.statements()
}

/// Parses `src` as one value and nothing else (for `KEY=VALUE` on a command line); `None` if it is not one.
pub fn parse_value(src: &str) -> Option<Value> {
    let mut p = Parser::new(src).ok()?;
    let value = p.value("", 0).ok()?;
    (p.tok == Tok::Eof).then_some(value)
}

/// Writes `s` as a double-quoted string this syntax reads back as `s`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::string(text)
    }

    fn n(text: &str) -> Value {
        Value::Atom { text: text.into(), quoted: false, line: 0 }
    }

    fn one(src: &str) -> Statement {
        let mut all = parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        assert_eq!(all.len(), 1, "{src:?}");
        all.remove(0)
    }

    fn error(src: &str) -> String {
        parse(src).map(|s| panic!("{src:?} parsed: {s:?}")).unwrap_err().to_string()
    }

    #[test]
    fn atoms() {
        assert_eq!(one("memory = 512").value, n("512"));
        assert_eq!(one("memory=0x200\n").value, n("0x200"));
        assert_eq!(one("name = 'web'").value, s("web"));
        assert_eq!(one("name = \"web\"").value, s("web"));
        assert_eq!(one("name = \"it's\"").value, s("it's"));
        assert_eq!(one("name = ''").value, s(""));
        assert_eq!(one("extra = 'a # not a comment'").value, s("a # not a comment"));
    }

    #[test]
    fn escapes() {
        assert_eq!(one(r#"x = "a\"b\\c\'d""#).value, s("a\"b\\c'd"));
        assert_eq!(one(r"x = 'tab\there\nnl'").value, s("tab\there\nnl"));
        assert_eq!(one(r"x = '\x41\102\0'").value, s("AB\0"));
        assert_eq!(one(r"x = '\a\b\f\r\v'").value, s("\x07\x08\x0c\r\x0b"));
        assert!(error(r"x = '\q'").contains("unknown escape \\q"));
        assert!(error(r"x = '\x4'").contains("two hex digits"));
        assert!(error(r"x = '\777'").contains("above \\377"));
    }

    #[test]
    fn lists() {
        assert_eq!(one("disk = []").value, Value::List(vec![]));
        assert_eq!(one("disk = [ ]").value, Value::List(vec![]));
        assert_eq!(one("vif = ['']").value, Value::List(vec![s("")]));
        assert_eq!(one("cpus = ['1', 2, \"3\"]").value, Value::List(vec![s("1"), n("2"), s("3")]));
        assert_eq!(one("x = ['a',]").value, Value::List(vec![s("a")]));
        assert_eq!(one("x = [['a'], []]").value, Value::List(vec![Value::List(vec![s("a")]), Value::List(vec![])]));
        let multi = "disk = [\n  'a',   # first\n\n  'b'\n  ,\n  'c',\n]\nname = 'x'\n";
        let all = parse(multi).unwrap();
        assert_eq!(all[0].value, Value::List(vec![s("a"), s("b"), s("c")]));
        assert_eq!((all[0].line, all[1].line), (1, 8));
        let Value::List(items) = &all[0].value else { panic!("a list") };
        assert_eq!(items.iter().map(Value::line).collect::<Vec<_>>(), [Some(2), Some(4), Some(6)]);
    }

    #[test]
    fn statements_comments_separators_and_lines() {
        let src = "# a comment\n\nname = 'a' # trailing\nmemory = 128; vcpus = 2;\n  maxmem = 256\n#end";
        let all = parse(src).unwrap();
        let keys: Vec<(&str, u32)> = all.iter().map(|s| (s.key.as_str(), s.line)).collect();
        assert_eq!(keys, [("name", 3), ("memory", 4), ("vcpus", 4), ("maxmem", 5)]);
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse("\n\n# only comments\n").unwrap(), []);
        // The last statement needs no newline; CRLF line ends work.
        assert_eq!(parse("a = 1\r\nb = 2").unwrap().len(), 2);
        // Keys: letters, digits, _ and ., as xl (plus capitals).
        assert_eq!(one("on_crash = 'x'").key, "on_crash");
        assert_eq!(one("device.model = 'x'").key, "device.model");
        assert_eq!(one("MEMORY = 1").key, "MEMORY");
    }

    #[test]
    fn append() {
        let all = parse("extra = 'a'\nextra += ' b'").unwrap();
        assert_eq!((all[1].op, all[1].line), (Op::Append, 2));
    }

    #[test]
    fn line_continuations() {
        let all = parse("extra = \\\n  'console=hvc0'\nmemory = 1").unwrap();
        assert_eq!(all[0].value, s("console=hvc0"));
        assert_eq!((all[0].line, all[1].line), (1, 3));
    }

    #[test]
    fn syntax_errors_name_line_and_key() {
        assert_eq!(
            error("name = web"),
            "1: name: expected a value (a number, a quoted string or a [list]), found 'web' (strings need quotes)"
        );
        assert_eq!(error("\n\nmemory 512"), "3: memory: expected '=' after the key, found number 512");
        assert_eq!(error("name = 'web"), "1: unterminated string (no closing ')");
        assert_eq!(error("a = 1\nname = \"web\n'"), "2: unterminated string (no closing \" on this line)");
        assert_eq!(error("disk = ['a'\n\n"), "1: disk: unterminated list (no closing ']')");
        assert_eq!(error("disk = ['a' 'b']"), "1: disk: expected ',' or ']' in a list, found string \"b\"");
        assert_eq!(
            error("memory = 512 256"),
            "1: memory: expected the end of the line or ';' after the value, found number 256"
        );
        assert_eq!(error("= 5"), "1: expected a key (KEY = VALUE), found '='");
        assert_eq!(error("memory = -1"), "1: unexpected character '-' (Python expressions are not supported: values are numbers, quoted strings and [lists])");
        assert_eq!(error("x = 1\ny = 2 @"), "2: unexpected character '@'");
        assert_eq!(
            error("x = "),
            "1: x: expected a value (a number, a quoted string or a [list]), found the end of the file"
        );
        assert_eq!(error("x = [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]"), "1: x: lists nest deeper than 16");
    }

    #[test]
    fn single_values() {
        assert_eq!(parse_value("512"), Some(n("512")));
        assert_eq!(parse_value("'web'"), Some(s("web")));
        assert_eq!(parse_value("['a', 'b']"), Some(Value::List(vec![s("a"), s("b")])));
        assert_eq!(parse_value("web"), None);
        assert_eq!(parse_value("root=/dev/xvda1 ro"), None);
        assert_eq!(parse_value("'a' 'b'"), None);
        assert_eq!(parse_value(""), None);
    }

    #[test]
    fn quoting_round_trips() {
        for text in ["", "plain", "it's \"quoted\"", "back\\slash", "nl\ntab\t", "\x01ctl"] {
            assert_eq!(parse_value(&quote(text)), Some(s(text)), "{text:?}");
        }
    }
}

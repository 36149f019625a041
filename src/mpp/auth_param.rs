//! The RFC 9110 §11 challenge-list grammar, read leniently, in one linear pass.
//!
//! ```text
//! challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param = token BWS "=" BWS ( token / quoted-string )
//! ```
//!
//! A field value is a comma-separated list of challenges; a new challenge starts where a list
//! element is a token followed by whitespace (its scheme), not by `=`. Quoted strings are atomic,
//! so a `Payment` inside one is never a boundary. Scheme and parameter names are returned as
//! written; callers compare them case-insensitively.
//!
//! Leniency, where real senders go wrong: text after a parameter value up to the next comma
//! (outside quoted strings) is skipped (so `d="a "b" c"` reads as `d="a "`); a value that is
//! neither a token nor a quoted string, or a quoted string that never closes, is returned as
//! [`None`] for the caller to refuse or ignore. Nothing here backtracks: every byte is looked at a
//! bounded number of times.

/// One challenge of a challenge list.
#[derive(Debug)]
pub(crate) struct RawChallenge<'a> {
    /// The auth-scheme, as written.
    pub(crate) scheme: &'a str,
    /// The token68 after the scheme, if the challenge carries one instead of parameters.
    pub(crate) token68: Option<&'a str>,
    /// The parameters in order: name as written, value unquoted (`None` when malformed).
    pub(crate) params: Vec<(&'a str, Option<String>)>,
}

/// Splits a `WWW-Authenticate` field value into its challenges.
pub(crate) fn parse_challenges(input: &str) -> Vec<RawChallenge<'_>> {
    let mut parser = Parser { s: input, pos: 0 };
    let mut out = Vec::new();
    loop {
        parser.skip_list_separators();
        if parser.at_end() {
            break;
        }
        let Some(scheme) = parser.token() else {
            parser.skip_junk();
            continue;
        };
        let mut challenge = RawChallenge {
            scheme,
            token68: None,
            params: Vec::new(),
        };
        let spaces = parser.skip_ows();
        if parser.at_end() || parser.peek() == Some(b',') {
            out.push(challenge);
            continue;
        }
        if spaces == 0 {
            // `foo=bar` or `foo"bar"` where a scheme should be: not a challenge.
            parser.skip_junk();
            continue;
        }
        if let Some(token68) = parser.token68() {
            challenge.token68 = Some(token68);
            out.push(challenge);
            continue;
        }
        parser.params(&mut challenge.params);
        out.push(challenge);
    }
    out
}

/// Splits an `Authorization` field value into its comma-separated elements, trimmed, keeping
/// quoted strings (and the commas inside them) whole.
pub(crate) fn split_list(input: &str) -> Vec<&str> {
    let mut parser = Parser { s: input, pos: 0 };
    let mut out = Vec::new();
    while !parser.at_end() {
        let start = parser.pos;
        parser.skip_junk();
        let element = input.get(start..parser.pos).unwrap_or_default().trim();
        if !element.is_empty() {
            out.push(element);
        }
        parser.pos += 1; // the comma, or past the end
    }
    out
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 `token68` characters, before the trailing `=`s.
fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn peek_at(&self, pos: usize) -> Option<u8> {
        self.s.as_bytes().get(pos).copied()
    }

    /// Skips spaces and tabs; returns how many.
    fn skip_ows(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Skips whitespace and empty list elements (`, ,`).
    fn skip_list_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        (self.pos > start).then(|| self.s.get(start..self.pos).unwrap_or_default())
    }

    /// A token68 that makes up the whole rest of the challenge (up to a comma or the end);
    /// otherwise leaves the position alone.
    fn token68(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let mut end = start;
        while self.peek_at(end).is_some_and(is_token68_char) {
            end += 1;
        }
        if end == start {
            return None;
        }
        while self.peek_at(end) == Some(b'=') {
            end += 1;
        }
        let mut after = end;
        while matches!(self.peek_at(after), Some(b' ' | b'\t')) {
            after += 1;
        }
        if after < self.s.len() && self.peek_at(after) != Some(b',') {
            return None;
        }
        self.pos = after;
        self.s.get(start..end)
    }

    /// Reads `#auth-param` until the list element after a comma is not a parameter (the next
    /// challenge's scheme) or the input ends.
    fn params(&mut self, params: &mut Vec<(&'a str, Option<String>)>) {
        loop {
            let Some(name) = self.token() else {
                self.skip_junk();
                if !self.next_element_is_param() {
                    return;
                }
                continue;
            };
            self.skip_ows();
            if self.peek() != Some(b'=') {
                self.skip_junk();
                if !self.next_element_is_param() {
                    return;
                }
                continue;
            }
            self.pos += 1;
            self.skip_ows();
            let value = if self.peek() == Some(b'"') {
                self.quoted_string()
            } else {
                self.token().map(str::to_owned)
            };
            params.push((name, value));
            self.skip_ows();
            if !self.at_end() && self.peek() != Some(b',') {
                self.skip_junk();
            }
            if !self.next_element_is_param() {
                return;
            }
        }
    }

    /// At a comma or the end: moves past the separators and tells whether the next list element
    /// is an auth-param (`token BWS "="`). Otherwise leaves the position at that element.
    fn next_element_is_param(&mut self) -> bool {
        self.skip_list_separators();
        let start = self.pos;
        let is_param = self.token().is_some() && {
            self.skip_ows();
            self.peek() == Some(b'=')
        };
        self.pos = start;
        is_param && !self.at_end()
    }

    /// Reads a quoted string starting at `"`, unescaping quoted pairs. `None` if it never closes.
    fn quoted_string(&mut self) -> Option<String> {
        let bytes = self.s.as_bytes();
        self.pos += 1;
        let mut value = String::new();
        let mut start = self.pos;
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b'"' => {
                    value.push_str(self.s.get(start..self.pos).unwrap_or_default());
                    self.pos += 1;
                    return Some(value);
                }
                b'\\' => {
                    value.push_str(self.s.get(start..self.pos).unwrap_or_default());
                    let escaped = self
                        .s
                        .get(self.pos + 1..)
                        .and_then(|rest| rest.chars().next());
                    let Some(escaped) = escaped else {
                        self.pos = bytes.len();
                        return None;
                    };
                    value.push(escaped);
                    self.pos += 1 + escaped.len_utf8();
                    start = self.pos;
                }
                _ => self.pos += 1,
            }
        }
        None
    }

    /// Moves to the next comma outside quoted strings, or to the end.
    fn skip_junk(&mut self) {
        let bytes = self.s.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b',' => return,
                b'"' => {
                    self.pos += 1;
                    while let Some(&b) = bytes.get(self.pos) {
                        match b {
                            b'"' => break,
                            b'\\' => self.pos += 2,
                            _ => self.pos += 1,
                        }
                    }
                    self.pos = (self.pos + 1).min(bytes.len());
                }
                _ => self.pos += 1,
            }
        }
        self.pos = self.pos.min(bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, value: &str) -> (String, Option<String>) {
        (name.to_owned(), Some(value.to_owned()))
    }

    fn params_of(challenge: &RawChallenge<'_>) -> Vec<(String, Option<String>)> {
        challenge
            .params
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn splits_a_list_of_mixed_challenges() {
        let input = r#"Bearer realm="a, Payment b", error=invalid_token, Basic YWxhZGRpbjpvcGVuc2VzYW1l==, Payment id="x", realm=api,Newauth"#;
        let parsed = parse_challenges(input);
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0].scheme, "Bearer");
        assert_eq!(
            params_of(&parsed[0]),
            vec![p("realm", "a, Payment b"), p("error", "invalid_token")]
        );
        assert_eq!(parsed[1].scheme, "Basic");
        assert_eq!(parsed[1].token68, Some("YWxhZGRpbjpvcGVuc2VzYW1l=="));
        assert_eq!(parsed[2].scheme, "Payment");
        assert_eq!(params_of(&parsed[2]), vec![p("id", "x"), p("realm", "api")]);
        assert_eq!(parsed[3].scheme, "Newauth");
        assert!(parsed[3].params.is_empty());
    }

    #[test]
    fn whitespace_around_separators() {
        let parsed = parse_challenges("  Payment\tid = \"a\" ,  ,realm= b ,Payment  id=c  ");
        assert_eq!(parsed.len(), 2);
        assert_eq!(params_of(&parsed[0]), vec![p("id", "a"), p("realm", "b")]);
        assert_eq!(params_of(&parsed[1]), vec![p("id", "c")]);
    }

    #[test]
    fn unescapes_quoted_pairs_including_non_ascii() {
        let parsed = parse_challenges(r#"Payment d="a\"b\\c\é\", x=y""#);
        assert_eq!(params_of(&parsed[0]), vec![p("d", "a\"b\\cé\", x=y")]);
    }

    #[test]
    fn junk_after_a_value_is_skipped_up_to_the_next_comma() {
        let parsed = parse_challenges(r#"Payment d="a "b" c", e=f"#);
        assert_eq!(params_of(&parsed[0]), vec![p("d", "a "), p("e", "f")]);
    }

    #[test]
    fn malformed_values_are_none() {
        // `a=` right after the scheme would read as a token68; start with a good parameter.
        let parsed = parse_challenges(r#"Payment b=c, a=, d="never closed\"#);
        assert_eq!(
            params_of(&parsed[0]),
            vec![p("b", "c"), ("a".to_owned(), None), ("d".to_owned(), None)]
        );
    }

    #[test]
    fn elements_without_a_scheme_are_skipped() {
        assert!(parse_challenges(r#"id="x", "quoted", =, ,"#).is_empty());
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn splits_authorization_lists_outside_quotes() {
        assert_eq!(
            split_list(r#"Bearer abc, Digest a="x, Payment y", , Payment e30 "#),
            vec!["Bearer abc", r#"Digest a="x, Payment y""#, "Payment e30"]
        );
        assert!(split_list(" , ").is_empty());
        assert_eq!(split_list(r#"a="\"#), vec![r#"a="\"#]);
    }
}

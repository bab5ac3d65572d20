//! Encoding helpers for the writers that build text by hand (the audit record's JSON,
//! PostgreSQL's COPY rows): a leaf any layer may use.

/// Whether any byte of `text` is `special`: one branchless pass, which the compiler
/// vectorises, for the encoders whose text nearly never has one.
pub fn any_byte(text: &str, special: impl Fn(u8) -> bool) -> bool {
    text.as_bytes().iter().fold(false, |any, &b| any | special(b))
}

/// Appends `text` as a JSON string: copied whole when it has nothing to escape (nearly
/// always), else written by serde_json.
pub fn json_string(out: &mut Vec<u8>, text: &str) {
    if any_byte(text, |b| b < 0x20 || b == b'"' || b == b'\\') {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy of text with nothing to escape and serde_json's escaping agree on every
    /// kind of text, so the fast path changes no output.
    #[test]
    fn json_strings_are_what_serde_json_writes() {
        let texts = [
            "",
            "client:abc-123",
            "Mozilla/5.0 (X11; Linux x86_64) é ✓ 😀",
            "say \"hi\"",
            "back\\slash",
            "line\nbreak\ttab\r\u{0}\u{1f}",
            "\u{7f} is not escaped",
        ];
        for text in texts {
            let mut out = Vec::new();
            json_string(&mut out, text);
            let expected = serde_json::to_string(text).expect("json");
            assert_eq!(String::from_utf8(out).expect("utf-8"), expected, "{text:?}");
        }
        assert!(!any_byte("plain text", |b| b == b'"'));
        assert!(any_byte("a \"quote\"", |b| b == b'"'));
    }
}

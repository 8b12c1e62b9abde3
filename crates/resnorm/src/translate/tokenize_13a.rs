//! sacreBLEU's default `13a` tokenizer (mteval-v13a, used by WMT), character for character.
//!
//! BLEU counts word n-grams, so how a line is cut into words decides the score; `13a` is the
//! cut every published sacreBLEU score uses. On one line it:
//! 1. removes `<skipped>` and `-\n`, turns `\n` into a space, unescapes `&quot; &amp; &lt; &gt;`;
//! 2. pads every ASCII symbol `{|}~[\]^_` `` ` `` `!"#$%&()*+:;<=>?@/` with spaces;
//! 3. splits `.` and `,` off unless they sit between digits (`1,000.5` stays one word);
//! 4. splits `-` after a digit (`12-3` becomes `12 - 3`);
//! 5. collapses whitespace (Python's definition, see [`is_python_space`]) to single spaces.
//!
//! Steps 2–4 are Python `re.sub` calls with two-character patterns, applied here with the
//! same leftmost, non-overlapping scan.
//!
//! ```
//! use resnorm::translate::tokenize_13a;
//! assert_eq!(tokenize_13a("He said: \"yes,\" 1,000.5 cats; 12-3."), "He said : \" yes , \" 1,000.5 cats ; 12 - 3 .");
//! assert_eq!(tokenize_13a("¿Dónde?"), "¿Dónde ?");
//! ```

/// `line` cut into space-separated words as sacreBLEU's `13a` tokenizer cuts it.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut chars = Vec::with_capacity(line.len() * 2 + 2);
    chars.push(' ');
    for c in line.chars() {
        if is_padded_symbol(c) {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    chars.push(' ');
    let is_digit = |c: char| c.is_ascii_digit();
    let is_stop = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) -> '\1 \2 '
    let chars = substitute_pairs(&chars, |a| !is_digit(a), is_stop, |a, b| [a, ' ', b, ' ']);
    // ([\.,])([^0-9]) -> ' \1 \2'
    let chars = substitute_pairs(&chars, is_stop, |b| !is_digit(b), |a, b| [' ', a, ' ', b]);
    // ([0-9])(-) -> '\1 \2 '
    let chars = substitute_pairs(&chars, is_digit, |b| b == '-', |a, b| [a, ' ', b, ' ']);
    let text: String = chars.into_iter().collect();
    text.split(is_python_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The class `[\{-\~\[-\` -\&\(-\+\:-\@\/]` of 13a's first rule.
fn is_padded_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// Python's `re.sub` of a two-character pattern: scans left to right and replaces each
/// match of `first` then `second`, continuing after it (matches never overlap).
fn substitute_pairs(
    chars: &[char],
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
    replace: impl Fn(char, char) -> [char; 4],
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && first(chars[i]) && second(chars[i + 1]) {
            out.extend(replace(chars[i], chars[i + 1]));
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Whitespace as Python's `str.split()` and `str.strip()` see it: Unicode `White_Space`
/// plus the separators U+001C..U+001F, which Rust's `char::is_whitespace` leaves out.
pub(super) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_rules_of_13a() {
        assert_eq!(tokenize_13a(""), "");
        assert_eq!(tokenize_13a("a.b,c"), "a . b , c");
        assert_eq!(tokenize_13a("3.5 and 1,000"), "3.5 and 1,000");
        assert_eq!(tokenize_13a("end 3."), "end 3 .");
        assert_eq!(tokenize_13a("x&amp;y &lt;z&gt;"), "x & y < z >");
        assert_eq!(tokenize_13a("a<skipped>b"), "ab");
        assert_eq!(tokenize_13a("well-\nknown"), "wellknown");
        assert_eq!(
            tokenize_13a("2019-2020 well-known"),
            "2019 - 2020 well-known"
        );
        assert_eq!(tokenize_13a("a\u{1f}b\u{3000}c"), "a b c");
        assert_eq!(tokenize_13a("¡Oh, Señor!"), "¡Oh , Señor !");
    }
}

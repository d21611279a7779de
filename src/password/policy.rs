//! Password policy: which passwords are acceptable, and in plain words why not.
//!
//! All checks run on the password with its white space removed, so padding a weak password with
//! spaces does not make it acceptable. Problem texts never quote the password or any part of it.

use zxcvbn::matching::patterns::MatchPattern;

use super::limits::MAX_PASSWORD_BYTES;

/// One row of `pgauth.password_policies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub min_length: u32,
    pub require_upper: bool,
    pub require_lower: bool,
    pub require_digit: bool,
    pub require_special: bool,
    /// zxcvbn score (0..=4) a password must reach.
    pub min_strength: u8,
    pub history: u32,
    pub max_age_days: u32,
}

impl Policy {
    /// The `default` policy as installed; also what the role-password check uses.
    pub fn builtin_default() -> Self {
        Self {
            name: "default".into(),
            min_length: 8,
            require_upper: false,
            require_lower: false,
            require_digit: false,
            require_special: false,
            min_strength: 3,
            history: 0,
            max_age_days: 0,
        }
    }
}

/// Words from the surroundings that a password must not be built on.
#[derive(Debug, Default, Clone, Copy)]
pub struct Context<'a> {
    pub username: Option<&'a str>,
    pub database: Option<&'a str>,
}

/// Words that show up in guessing dictionaries first; matched after undoing leetspeak.
const GENERIC_TERMS: &[&str] = &[
    "password",
    "passwort",
    "passwd",
    "admin",
    "administrator",
    "root",
    "postgres",
    "welcome",
    "letmein",
    "qwerty",
    "secret",
    "changeme",
    "default",
    "guest",
    "login",
    "master",
    "superuser",
    "sysadmin",
    "pgauth",
];

/// Runs of four or more along these (or backwards) count as sequential.
const SEQUENCES: &[&str] = &[
    "abcdefghijklmnopqrstuvwxyz",
    "01234567890",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "qwertzuiop",
    "azertyuiop",
];
const SEQUENCE_RUN: usize = 4;

/// zxcvbn's cost grows quickly with length; past this many characters the other checks decide.
const STRENGTH_ESTIMATE_CHARS: usize = 100;

fn leet_to_letters(s: &str, one_as: char) -> String {
    s.chars()
        .map(|c| match c {
            '0' => 'o',
            '1' => one_as,
            '3' => 'e',
            '4' | '@' => 'a',
            '5' | '$' => 's',
            '7' | '+' => 't',
            '8' => 'b',
            '9' => 'g',
            '!' => 'i',
            '|' => 'l',
            other => other,
        })
        .collect()
}

fn letters_only(s: &str) -> String {
    s.chars().filter(|c| c.is_alphabetic()).collect()
}

/// The readings of a password that word checks look at: as typed (lower case), with leetspeak
/// undone, and with digits and symbols dropped.
fn readings(lower: &str) -> Vec<String> {
    let mut v = vec![
        lower.to_string(),
        leet_to_letters(lower, 'i'),
        leet_to_letters(lower, 'l'),
        letters_only(lower),
        letters_only(&leet_to_letters(lower, 'i')),
        letters_only(&leet_to_letters(lower, 'l')),
    ];
    v.sort();
    v.dedup();
    v
}

/// Parts of a context value worth looking for: "john.smith42@example.com" → john, smith, example, com…
fn context_words(value: &str) -> Vec<String> {
    let lower = value.to_lowercase();
    let mut words: Vec<String> = lower
        .split(|c: char| !c.is_alphanumeric())
        .map(letters_only)
        .filter(|w| w.chars().count() >= 3)
        .collect();
    let whole = letters_only(&lower);
    if whole.chars().count() >= 3 {
        words.push(whole);
    }
    words.sort();
    words.dedup();
    words
}

fn contains_word(readings: &[String], word: &str) -> bool {
    let reversed: String = word.chars().rev().collect();
    readings
        .iter()
        .any(|r| r.contains(word) || r.contains(reversed.as_str()))
}

fn has_repetition(chars: &[char]) -> bool {
    // period 1: "aaaa"; period 2: "ababab"; period 3: "abcabcabc"
    for (period, needed) in [(1usize, 3usize), (2, 4), (3, 6)] {
        let mut run = 0;
        for i in period..chars.len() {
            if chars[i] == chars[i - period] {
                run += 1;
                if run >= needed {
                    return true;
                }
            } else {
                run = 0;
            }
        }
    }
    false
}

fn has_sequence(lower: &[char]) -> bool {
    if lower.len() < SEQUENCE_RUN {
        return false;
    }
    lower.windows(SEQUENCE_RUN).any(|w| {
        let fwd: String = w.iter().collect();
        let back: String = w.iter().rev().collect();
        SEQUENCES
            .iter()
            .any(|s| s.contains(fwd.as_str()) || s.contains(back.as_str()))
    })
}

/// True when the whole password (ignoring digits and symbols around it) is one entry of zxcvbn's
/// common-password list (the most frequent passwords of real leaks), leetspeak included.
fn is_common_password(lower: &str) -> bool {
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    [lower, core].iter().any(|candidate| {
        if candidate.is_empty() || candidate.chars().count() > STRENGTH_ESTIMATE_CHARS {
            return false;
        }
        let n = candidate.chars().count();
        let estimate = zxcvbn::zxcvbn(candidate, &[]);
        estimate.sequence().iter().any(|m| {
            m.i == 0
                && m.j + 1 == n
                && matches!(&m.pattern, MatchPattern::Dictionary(d)
                    // zxcvbn does not export its DictionaryType; its default variant is Passwords.
                    if d.dictionary_name == Default::default() && !d.reversed)
        })
    })
}

/// Every problem of `password` under `policy`, in words a user can act on. Empty = acceptable.
pub fn problems(password: &str, context: &Context<'_>, policy: &Policy) -> Vec<String> {
    let mut found = Vec::new();
    if password.len() > MAX_PASSWORD_BYTES {
        found.push(format!(
            "must not be longer than {MAX_PASSWORD_BYTES} bytes"
        ));
        return found;
    }
    let stripped: String = password.chars().filter(|c| !c.is_whitespace()).collect();
    let chars: Vec<char> = stripped.chars().collect();
    let lower = stripped.to_lowercase();
    let lower_chars: Vec<char> = lower.chars().collect();

    if (chars.len() as u32) < policy.min_length {
        found.push(format!(
            "must be at least {} characters long, not counting spaces",
            policy.min_length
        ));
    }
    if policy.require_upper && !chars.iter().any(|c| c.is_uppercase()) {
        found.push("must contain an upper-case letter".into());
    }
    if policy.require_lower && !chars.iter().any(|c| c.is_lowercase()) {
        found.push("must contain a lower-case letter".into());
    }
    if policy.require_digit && !chars.iter().any(|c| c.is_ascii_digit()) {
        found.push("must contain a digit".into());
    }
    if policy.require_special && !chars.iter().any(|c| !c.is_alphanumeric()) {
        found.push("must contain a special character (not a letter, digit or space)".into());
    }
    if has_repetition(&lower_chars) {
        found.push("must not repeat a character or a short pattern several times in a row".into());
    }
    if has_sequence(&lower_chars) {
        found.push("must not contain a sequence such as abcd, 4321 or qwer".into());
    }

    let readings = readings(&lower);
    if GENERIC_TERMS.iter().any(|t| contains_word(&readings, t)) {
        found.push("must not contain a generic word such as password, admin or root".into());
    }
    for (label, value) in [
        ("user name", context.username),
        ("database name", context.database),
    ] {
        if let Some(value) = value {
            if context_words(value)
                .iter()
                .any(|w| contains_word(&readings, w))
            {
                found.push(format!(
                    "must not contain the {label}, reversed or disguised"
                ));
            }
        }
    }
    if is_common_password(&lower) {
        found.push("is one of the most commonly used passwords".into());
    }

    if policy.min_strength > 0 {
        let sample: String = stripped.chars().take(STRENGTH_ESTIMATE_CHARS).collect();
        let mut inputs: Vec<String> = Vec::new();
        for value in [context.username, context.database].into_iter().flatten() {
            inputs.push(value.to_lowercase());
            inputs.extend(context_words(value));
        }
        let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let score = u8::from(zxcvbn::zxcvbn(&sample, &input_refs).score());
        if score < policy.min_strength {
            found.push(format!(
                "is too easy to guess (strength {score} of 4, at least {} needed): use more words or characters",
                policy.min_strength
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_problems(pw: &str) -> Vec<String> {
        problems(pw, &Context::default(), &Policy::builtin_default())
    }

    fn has(problems: &[String], needle: &str) -> bool {
        problems.iter().any(|p| p.contains(needle))
    }

    #[test]
    fn accepts_strong_random_passwords() {
        for pw in [
            "xT7#qLm9!vRw2Zp",
            "correct horse battery staple umbrella",
            "Vq8sN2rKf0LmWz4t",
        ] {
            assert_eq!(default_problems(pw), Vec::<String>::new(), "{pw}");
        }
        let strong = Policy {
            name: "strong".into(),
            min_length: 20,
            require_special: true,
            require_upper: true,
            require_lower: true,
            require_digit: true,
            min_strength: 4,
            ..Policy::builtin_default()
        };
        let ctx = Context::default();
        assert!(problems("kR8#vN2q!Lz7wT4m%Xp9Yb", &ctx, &strong).is_empty());
        assert!(has(
            &problems("kR8vN2qLz7wT4mXp9Yb5c", &ctx, &strong),
            "special character"
        ));
    }

    #[test]
    fn catches_the_listed_weaknesses() {
        assert!(has(&default_problems("aB3$"), "at least 8 characters"));
        assert!(has(
            &default_problems("a b c d e f"),
            "at least 8 characters"
        ));
        assert!(has(&default_problems("xzaaaaaa9Q#"), "repeat"));
        assert!(has(&default_problems("ZQ#ababab7"), "repeat"));
        assert!(has(&default_problems("1234abcd"), "sequence"));
        assert!(has(&default_problems("Tr0ub#qwer"), "sequence"));
        assert!(has(&default_problems("xX9#P@ssw0rd!zq"), "generic word"));
        assert!(has(&default_problems("administrator77"), "generic word"));
        assert!(has(&default_problems("dragon"), "commonly used"));
        assert!(has(&default_problems("monkey123!"), "commonly used"));
        assert!(has(&default_problems("iloveyou"), "too easy to guess"));
    }

    #[test]
    fn context_words_and_their_derivatives() {
        let ctx = Context {
            username: Some("alice.walker"),
            database: Some("payroll"),
        };
        let p = Policy::builtin_default();
        for pw in [
            "Alice#1990zzQ",
            "ecila#Zq91!xX",
            "4l1c3-Qz#91!x",
            "xQ#9walker!Zz",
            "Payroll#2026!zQ",
        ] {
            let found = problems(pw, &ctx, &p);
            assert!(
                has(&found, "user name") || has(&found, "database name"),
                "{pw}: {found:?}"
            );
        }
        assert!(!has(&problems("Vq8sN2rKf0LmWz4t", &ctx, &p), "user name"));
    }

    #[test]
    fn problems_never_quote_the_password() {
        let pw = "hunterhunterhunter";
        for problem in default_problems(pw) {
            assert!(!problem.contains("hunter"), "{problem}");
        }
    }

    #[test]
    fn too_long() {
        let long = "a".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(has(&default_problems(&long), "longer than"));
    }
}

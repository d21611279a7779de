//! The documentation's examples, run: README.md and docs/*.md must not claim output pgauth does
//! not produce, the README's quick start must be `examples/quickstart.sql` (the demo `make install`
//! runs), and links between the pages must resolve. The convention is described in
//! docs/development.md, "Checked examples":
//!
//! - A fenced ```` ```sql ```` block followed, with only blank lines between, by a fenced
//!   ```` ```text ```` block is a *checked example*. The SQL is run by `psql -X -q` (no psqlrc, no
//!   command tags, default aligned format) as `postgres` in a fresh database with pgauth; its
//!   standard output and standard error together must equal the text block.
//! - Lines are compared after removing trailing spaces; blank lines at the start and end of
//!   either side are ignored. In the text block, `…` matches any characters within one line, for
//!   values that differ from run to run (uuids, hashes, timestamps).
//! - Any other ```` ```sql ```` block is illustration and must not claim output.

use pgauth_integration_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// README.md and every docs/*.md, as (path relative to the repository, text).
fn doc_files() -> Vec<(String, String)> {
    let root = repo_root();
    let mut names = vec!["README.md".to_string()];
    let mut pages: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    pages.sort();
    names.extend(pages);
    names
        .into_iter()
        .map(|n| {
            let text =
                std::fs::read_to_string(root.join(&n)).unwrap_or_else(|e| panic!("{n}: {e}"));
            (n, text)
        })
        .collect()
}

#[derive(Debug)]
struct Block {
    lang: String,
    body: String,
    /// 1-based line of the opening fence.
    line: usize,
    /// 0-based index of the line after the closing fence.
    end: usize,
}

fn fenced_blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(info) = lines[i].strip_prefix("```") {
            let lang = info.trim().to_string();
            let start = i;
            let mut body = String::new();
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                body.push_str(lines[i]);
                body.push('\n');
                i += 1;
            }
            blocks.push(Block {
                lang,
                body,
                line: start + 1,
                end: i + 1,
            });
        }
        i += 1;
    }
    blocks
}

struct Example {
    file: String,
    line: usize,
    sql: String,
    expected: String,
}

/// The checked examples: a `sql` block followed by a `text` block, only blank lines between.
fn checked_examples() -> Vec<Example> {
    let mut examples = Vec::new();
    for (file, text) in doc_files() {
        let lines: Vec<&str> = text.lines().collect();
        let blocks = fenced_blocks(&text);
        for pair in blocks.windows(2) {
            let (sql, out) = (&pair[0], &pair[1]);
            let between_blank = (sql.end..out.line - 1).all(|l| lines[l].trim().is_empty());
            if sql.lang == "sql" && out.lang == "text" && between_blank {
                examples.push(Example {
                    file: file.clone(),
                    line: sql.line,
                    sql: sql.body.clone(),
                    expected: out.body.clone(),
                });
            }
        }
    }
    examples
}

fn psql() -> String {
    let bin = pgauth_integration_tests::pg_bin();
    format!("{bin}/psql")
}

/// Run `sql` through psql in `dbname`; standard output and error together, and the exit status.
fn run_psql(dbname: &str, sql: &str, extra: &[&str]) -> (String, bool) {
    use std::io::Write;
    let port = dsn_port();
    let mut args = vec![
        "-X",
        "-q",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        dbname,
    ];
    args.extend_from_slice(extra);
    // One pipe for both streams, so an error appears where psql printed it.
    let quoted: Vec<String> = std::iter::once(psql())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut child = Command::new("sh")
        .args(["-c", &format!("{} 2>&1", quoted.join(" "))])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("psql");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

fn normalise(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
    while lines.first().is_some_and(|l| l.is_empty()) {
        lines.remove(0);
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Does `actual` match the expected line, where `…` stands for any characters?
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let mut rest = actual;
    let Some(after_first) = rest.strip_prefix(parts[0]) else {
        return false;
    };
    rest = after_first;
    let last = parts[parts.len() - 1];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn output_matches(expected: &str, actual: &str) -> bool {
    let (e, a) = (normalise(expected), normalise(actual));
    e.len() == a.len() && e.iter().zip(&a).all(|(e, a)| line_matches(e, a))
}

#[test]
fn placeholder_matching() {
    assert!(line_matches("a … b", "a 123 b"));
    assert!(line_matches("…", "anything"));
    assert!(line_matches(" id | …", " id | 7c9e-…"));
    assert!(!line_matches("a … b", "a 123 c"));
    assert!(!line_matches("t", "f"));
    assert!(output_matches("\n x\n---\n 1\n\n", " x \n---\n 1\n"));
    assert!(!output_matches(" x\n 1\n", " x\n 1\n 2\n"));
}

/// Every checked example of README.md and docs/*.md produces the output the page shows.
#[test]
fn checked_examples_show_real_output() {
    let examples = checked_examples();
    // The convention must keep finding the examples (a renamed fence would silently skip them).
    assert!(
        examples.len() >= 5,
        "only {} checked examples found",
        examples.len()
    );
    let mut failures = Vec::new();
    for (n, ex) in examples.iter().enumerate() {
        let db = format!("pgauth_docs_{n}");
        drop(fresh_database(&db));
        let (actual, _) = run_psql(&db, &ex.sql, &[]);
        if !output_matches(&ex.expected, &actual) {
            failures.push(format!(
                "{}:{}: the example's output differs.\n--- the page shows:\n{}\n--- psql printed:\n{}",
                ex.file,
                ex.line,
                normalise(&ex.expected).join("\n"),
                normalise(&actual).join("\n")
            ));
        }
        let mut admin = connect_to("postgres");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .unwrap();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The quick start in README.md is `examples/quickstart.sql`, character for character, and it
/// runs without an error (as `make install`'s demo runs it).
#[test]
fn readme_quick_start_is_the_demo() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let file = std::fs::read_to_string(root.join("examples/quickstart.sql")).unwrap();
    let section = readme
        .split("\n## Quick start\n")
        .nth(1)
        .expect("README.md has a section \"## Quick start\"");
    let block = fenced_blocks(section)
        .into_iter()
        .find(|b| b.lang == "sql")
        .expect("the quick start section has a ```sql block");
    assert!(
        block.body == file,
        "README.md's quick start and examples/quickstart.sql differ: copy one onto the other"
    );

    drop(fresh_database("pgauth_docs_quickstart"));
    let (out, ok) = run_psql("pgauth_docs_quickstart", &file, &["-v", "ON_ERROR_STOP=1"]);
    assert!(ok, "examples/quickstart.sql failed:\n{out}");
    assert!(!out.contains("ERROR"), "examples/quickstart.sql: {out}");
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every relative link in README.md and docs/*.md names a file that exists, and an anchor that
/// is a heading of that page.
#[test]
fn links_between_pages_resolve() {
    let root = repo_root();
    let mut broken = Vec::new();
    for (file, text) in doc_files() {
        let dir = Path::new(&file).parent().unwrap().to_path_buf();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(j) = rest.find(')') else { break };
            let target = &rest[..j];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target, None),
            };
            let page = if path.is_empty() {
                root.join(&file)
            } else {
                root.join(&dir).join(path)
            };
            if !page.exists() {
                broken.push(format!("{file}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&page).unwrap_or_default();
                if !anchors(&text).iter().any(|a| a == anchor) {
                    broken.push(format!("{file}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

//! `confsync config example` and README's table, rendered from the key descriptors.
//!
//! In the example, prose comments start with `# `; a disabled key or table (unset, or in an
//! optional table) starts with `#` directly, so removing that `#` turns it on.

use std::fmt::Write;

use super::{Key, Presence, Type, sections};

/// Width the example's comments are wrapped to.
const WIDTH: usize = 99;

/// `confsync config example`: every table and key of every section (each provider's included),
/// with its default, range, environment variable and what it does. It is a valid configuration
/// as printed (the local provider, every default).
pub fn example() -> String {
    let sections = sections();
    let mut out = String::new();
    comment(
        &mut out,
        "confsync configuration: every key with its default (`confsync config example`). Keys with a default may be left out. A line starting with `#` and no space is a key or table that is off: remove the `#` to set it (tables marked optional are needed only when used). Environment variables override these keys:",
    );
    for section in &sections {
        for key in section.keys {
            if let Some(var) = key.env {
                let _ = writeln!(out, "#   {var}: {}.{}", section.path, key.name);
            }
        }
    }
    for section in &sections {
        out.push('\n');
        let off = if section.optional { "#" } else { "" };
        let doc = if section.optional {
            format!("{} Optional table.", section.doc)
        } else {
            section.doc.to_owned()
        };
        comment(&mut out, &doc);
        let _ = writeln!(out, "{off}[{}]", section.path);
        for key in section.keys {
            comment(&mut out, &key_doc(key));
            let disabled = section.optional || key.presence == Presence::Optional;
            let off = if disabled { "#" } else { "" };
            let _ = writeln!(out, "{off}{} = {}", key.name, key.example);
        }
    }
    out
}

/// What a key's comment says: its doc, then whether it is required, its range and its
/// environment variable.
fn key_doc(key: &Key) -> String {
    let mut doc = key.doc.to_owned();
    if key.presence == Presence::Required {
        doc.push_str(" Required.");
    }
    if let Type::OneOf(_) = key.ty {
        let _ = write!(
            doc,
            " Values: {}.",
            key.ty.to_string().trim_start_matches("one of ")
        );
    }
    if let Some((low, high)) = key.bounds {
        let _ = write!(doc, " Range: {low} to {high}.");
    }
    if let Some(var) = key.env {
        let _ = write!(doc, " Environment: {var}.");
    }
    doc
}

/// `text` as `# ` comment lines of at most [`WIDTH`] columns.
fn comment(out: &mut String, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && 2 + line.len() + 1 + word.len() > WIDTH {
            let _ = writeln!(out, "# {line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "# {line}");
    }
}

/// README's configuration table (`confsync config example --markdown`): a row per table and per
/// key, with its type and range, default and what it does.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | type | default | what it does |\n|---|---|---|---|\n");
    for section in sections() {
        let _ = writeln!(
            out,
            "| **`[{}]`** | table | {} | {} |",
            section.path,
            if section.optional { "optional" } else { "" },
            cell(section.doc)
        );
        for key in section.keys {
            let default = match key.presence {
                Presence::Default(value) => format!("`{value}`"),
                _ => key.default_text().to_owned(),
            };
            let mut doc = cell(key.doc);
            if let Some(var) = key.env {
                let _ = write!(doc, " Environment: `{var}`.");
            }
            let _ = writeln!(
                out,
                "| `{}.{}` | {} | {} | {doc} |",
                section.path,
                key.name,
                cell(&key.type_text()),
                cell(&default)
            );
        }
    }
    out
}

/// Text safe in a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_wrap_on_words() {
        let mut out = String::new();
        comment(&mut out, &"word ".repeat(60));
        for line in out.lines() {
            assert!(line.len() <= WIDTH && line.starts_with("# word"), "{line}");
        }
        assert_eq!(out.matches("word").count(), 60);
    }

    #[test]
    fn cells_escape_pipes() {
        assert_eq!(cell("a|b"), "a\\|b");
    }
}

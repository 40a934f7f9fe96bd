//! What the service accepts as a calendar, event or conference id from a caller, checked before
//! anything is stored, logged or sent anywhere.
//!
//! Every id: 1 to [`MAX_ID_LEN`] bytes, no control character (NUL, CR, LF, tab, DEL, C1), no
//! whitespace, not `.` or `..`. Then, by kind:
//! - calendar ids are what Google's are: an email (`alice@example.com`) or a group, resource or
//!   imported calendar (`...@group.calendar.google.com`, `en.usa#holiday@group.v.calendar.google.com`):
//!   a local part and a domain around one `@`, from the printable ASCII an address uses (no
//!   quotes, brackets, slashes or backslashes);
//! - event ids: Google makes them from base32hex (5 to 1024 characters), instances add
//!   `_20261201T100000Z` and imported events carry other characters, so letters, digits and
//!   `_ - . @ + = : ~` are accepted;
//! - conference ids are made by the providers (Zoom, Teams, Webex, ...): any printable ASCII.

/// Longest id accepted (Google's limit for event ids; calendar ids are far shorter).
pub const MAX_ID_LEN: usize = 1024;

/// Which id a value claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Calendar,
    Event,
    Conference,
}

impl IdKind {
    fn name(self) -> &'static str {
        match self {
            IdKind::Calendar => "calendarId",
            IdKind::Event => "eventId",
            IdKind::Conference => "conference id",
        }
    }
}

/// Checks an id a caller sent; the error says what is wrong without echoing the value (it may
/// be huge or carry control characters).
pub fn validate_id(kind: IdKind, value: &str) -> Result<(), String> {
    let name = kind.name();
    if value.is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(format!(
            "{name} is too long ({} bytes; at most {MAX_ID_LEN})",
            value.len()
        ));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{name} must not contain control characters (NUL, CR, LF, ...) or whitespace"
        ));
    }
    if value == "." || value == ".." {
        return Err(format!("{name} must not be \".\" or \"..\""));
    }
    match kind {
        IdKind::Calendar => {
            let ok_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-=?^_`{|}~.".contains(c);
            let mut parts = value.split('@');
            let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "{name} must be a calendar address: an email or ...@group.calendar.google.com"
                ));
            };
            if local.is_empty()
                || domain.is_empty()
                || !domain.contains('.')
                || !value.chars().all(|c| c == '@' || ok_char(c))
                || !domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
            {
                return Err(format!(
                    "{name} must be a calendar address: an email or ...@group.calendar.google.com"
                ));
            }
        }
        IdKind::Event => {
            if !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.@+=:~".contains(c))
            {
                return Err(format!(
                    "{name} may contain only letters, digits and _ - . @ + = : ~"
                ));
            }
        }
        IdKind::Conference => {
            if !value.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!("{name} must be printable ASCII"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_shaped_ids_pass() {
        for calendar in [
            "alice@example.com",
            "Alice.Smith+cal@example.co.uk",
            "c_0123456789abcdef@group.calendar.google.com",
            "en.usa#holiday@group.v.calendar.google.com",
            "room-1@resource.calendar.google.com",
        ] {
            assert_eq!(
                validate_id(IdKind::Calendar, calendar),
                Ok(()),
                "{calendar}"
            );
        }
        for event in [
            "abcdefgh01",
            "e",
            "0123456789abcdefghijklmnopqrstuv",
            "abcdefgh01_20261201T100000Z",
            "_60q30c1g60o30e1i60o4ac1g60rj8gpl88rj2c1h84s34h9g",
            "040000008200E00074C5B7101A82E008@google.com",
        ] {
            assert_eq!(validate_id(IdKind::Event, event), Ok(()), "{event}");
        }
        assert_eq!(validate_id(IdKind::Conference, "loc-3f2a/b+=="), Ok(()));
        assert_eq!(validate_id(IdKind::Event, &"a".repeat(MAX_ID_LEN)), Ok(()));
    }

    #[test]
    fn hostile_ids_are_refused_without_echoing_them() {
        let long = "a".repeat(60_000);
        for kind in [IdKind::Calendar, IdKind::Event, IdKind::Conference] {
            for bad in [
                "",
                ".",
                "..",
                "a\0b@example.com",
                "a@example.com\r\nforged: line",
                "a\n@example.com",
                "a b@example.com",
                "a\u{85}@example.com",
                "a\u{7f}@example.com",
                long.as_str(),
            ] {
                let e = validate_id(kind, bad).unwrap_err();
                assert!(
                    !e.contains('\n') && !e.contains('\0') && e.len() < 200,
                    "{e}"
                );
            }
        }
        for bad in [
            "primary",
            "a@b@example.com",
            "@example.com",
            "alice@",
            "alice@localhost",
            "../etc@example.com",
            "alice@exa/mple.com",
            "\"quoted\"@example.com",
            "alice@example.com/../x",
        ] {
            assert!(validate_id(IdKind::Calendar, bad).is_err(), "{bad}");
        }
        for bad in ["a/b", "a\\b", "<script>", "a%0d", "é"] {
            assert!(validate_id(IdKind::Event, bad).is_err(), "{bad}");
        }
        assert!(validate_id(IdKind::Conference, "é").is_err());
    }
}

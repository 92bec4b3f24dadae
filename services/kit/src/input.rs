//! Free-text fields of requests, refused with a message that names the
//! field and what to change, before they reach PostgreSQL (whose text
//! cannot hold NUL) or a screen (where control characters hide text);
//! and email addresses, one rule for every directory that keeps them.

use tonic::Status;

/// A trimmed optional field, refused past `max` characters or with a NUL.
pub fn field(value: &str, name: &str, max: usize) -> Result<Option<String>, Status> {
    let value = value.trim();
    refuse_nul(value, name)?;
    if value.chars().count() > max {
        return Err(Status::invalid_argument(format!(
            "{name} is longer than {max} characters"
        )));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// A one-line [`field`]: names, addresses, serials. Control characters
/// (line breaks, escapes) are refused rather than stripped, so what is
/// stored is what the caller sees they typed.
pub fn line(value: &str, name: &str, max: usize) -> Result<Option<String>, Status> {
    let value = field(value, name, max)?;
    if value
        .as_deref()
        .is_some_and(|v| v.chars().any(char::is_control))
    {
        return Err(Status::invalid_argument(format!(
            "{name} contains a control character (a line break, tab or escape): write it on one line"
        )));
    }
    Ok(value)
}

/// PostgreSQL text cannot hold NUL; say so rather than fail inside.
pub fn refuse_nul(value: &str, name: &str) -> Result<(), Status> {
    if value.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "{name} contains a NUL character"
        )));
    }
    Ok(())
}

/// An address, lower-cased: one `@`, something on each side, no spaces.
pub fn email(text: &str) -> Result<String, String> {
    let address = text.trim().to_lowercase();
    let valid = address.len() <= 254
        && address.split('@').count() == 2
        && address
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !address.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(address)
    } else {
        Err(format!(
            "{text:?} is not an email address: write it like name@example.com"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_trimmed_and_empty_is_none() {
        assert_eq!(
            field("  Acme ", "name", 10).unwrap().as_deref(),
            Some("Acme")
        );
        assert_eq!(field("   ", "name", 10).unwrap(), None);
    }

    #[test]
    fn addresses_are_lower_cased_and_checked() {
        assert_eq!(email(" Ops@Acme.Example ").unwrap(), "ops@acme.example");
        for bad in [
            "ops",
            "a@b@c.d",
            "@acme.example",
            "ops@localhost",
            "o ps@acme.example",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostile_text_is_refused_naming_the_field() {
        let nul = field("a\0b", "name", 10).unwrap_err();
        assert!(nul.message().contains("name contains a NUL"), "{nul:?}");
        let long = field(&"x".repeat(11), "name", 10).unwrap_err();
        assert!(long.message().contains("longer than 10"), "{long:?}");
        let control = line("Acme\nGmbH", "name", 20).unwrap_err();
        assert!(
            control.message().contains("control character"),
            "{control:?}"
        );
        assert!(
            field("Acme\nGmbH", "body", 20).is_ok(),
            "fields may span lines"
        );
    }
}

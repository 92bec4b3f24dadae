//! Phone numbers as PBXs and people write them, normalised to E.164 so a
//! caller is matched to their tickets and to the customer's contacts
//! whatever the format. One rule: `intake` matches callers with it and
//! `contracts` stores contacts' numbers with it, so the two always agree.
//!
//! - `+49 30 1234-567`, `(+49) 30/1234567`: international → `+49301234567`;
//! - `0049301234567`: the international prefix `00` → `+49301234567`;
//! - `030 1234567`: national (one leading `0`) → the configured country code
//!   in front, `+49301234567`; without one configured it cannot be placed;
//! - `49301234567`: ten or more digits without a prefix are taken as an
//!   international number without its `+`;
//! - anything shorter (`204`, an extension) is an internal line, not a
//!   customer.

/// The E.164 form of `raw`, or `None` for an internal extension or
/// something that is not a number.
pub fn normalise(raw: &str, country_code: &str) -> Option<String> {
    let raw = raw.trim();
    let plus = raw.starts_with('+') || raw.starts_with("(+");
    if raw
        .chars()
        .any(|c| !(c.is_ascii_digit() || " +-()./".contains(c)))
    {
        return None;
    }
    // `+49 (0)30 ...`: the national trunk 0, written for callers at home.
    let raw = if plus || raw.starts_with("00") {
        std::borrow::Cow::Owned(raw.replacen("(0)", "", 1))
    } else {
        std::borrow::Cow::Borrowed(raw)
    };
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else if let Some(rest) = digits.strip_prefix('0') {
        if country_code.is_empty() {
            return None;
        }
        format!("{country_code}{rest}")
    } else if digits.len() >= 10 {
        digits
    } else {
        return None;
    };
    // E.164: at most 15 digits, and no country code starts with 0.
    ((8..=15).contains(&international.len()) && !international.starts_with('0'))
        .then(|| format!("+{international}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised_to_e164_whatever_the_pbx_sends() {
        for raw in [
            "+49 30 1234567",
            "(+49) 30/1234567",
            "0049301234567",
            "030 1234567",
            "49301234567",
            "+49-30-123-45-67",
            "+49 (0)30 1234567",
        ] {
            assert_eq!(
                normalise(raw, "49").as_deref(),
                Some("+49301234567"),
                "{raw}"
            );
        }
    }

    #[test]
    fn extensions_and_junk_are_not_customers() {
        assert_eq!(normalise("204", "49"), None);
        assert_eq!(normalise("", "49"), None);
        assert_eq!(normalise("anonymous", "49"), None);
        assert_eq!(normalise("+49 30 1234567 ext 5", "49"), None);
        assert_eq!(normalise("+1234567890123456", "49"), None, "too long");
    }

    #[test]
    fn a_national_number_needs_a_country_code() {
        assert_eq!(normalise("030 1234567", ""), None);
        assert_eq!(
            normalise("0755 8888 1234", "86").as_deref(),
            Some("+8675588881234")
        );
    }
}

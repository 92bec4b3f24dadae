//! How a service names a ticket it does not own: the ticket's id, or its
//! number as people write it (`HL-10001`, `hl-10001`, `10001`). Services
//! that keep copies of tickets (clocks, breaches) look them up with it.

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketRef {
    Id(Uuid),
    /// Normalised: `HL-10001`.
    Number(String),
}

impl TicketRef {
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        match Uuid::parse_str(text) {
            Ok(id) => Self::Id(id),
            Err(_) => {
                let digits = text
                    .strip_prefix("HL-")
                    .or_else(|| text.strip_prefix("hl-"))
                    .unwrap_or(text);
                Self::Number(format!("HL-{digits}"))
            }
        }
    }

    /// Bind values for `ticket_id = $1 OR number = $2`: the side that does
    /// not apply is `NULL` and matches nothing.
    pub fn columns(self) -> (Option<Uuid>, Option<String>) {
        match self {
            Self::Id(id) => (Some(id), None),
            Self::Number(number) => (None, Some(number)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_is_named_by_id_or_by_number_as_people_write_it() {
        let id = Uuid::now_v7();
        assert_eq!(TicketRef::parse(&format!(" {id} ")), TicketRef::Id(id));
        for written in ["HL-10001", "hl-10001", "10001"] {
            assert_eq!(
                TicketRef::parse(written),
                TicketRef::Number("HL-10001".into())
            );
        }
    }
}

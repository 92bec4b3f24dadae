//! A CSV reader for a file that arrives in pieces (RFC 4180: fields
//! separated by commas, a field in double quotes may hold commas, line
//! breaks and `""` for a quote), which knows the line every record and
//! every field starts on, so a fault is reported where the user sees it
//! even after quoted line breaks. It keeps bytes: whether they are UTF-8
//! is for the reader of each field to say, with the line of the bad byte.
//!
//! Line breaks are `\n`, `\r\n` or a lone `\r`, each one line. A UTF-8
//! byte order mark at the very start is skipped (spreadsheets write one).
//! Blank lines are skipped. Nothing is unbounded: a field keeps at most
//! [`MAX_FIELD_BYTES`] (the rest is counted as `overlong`), a record at
//! most [`MAX_FIELDS`] fields (the rest are counted).

/// The most bytes of one field that are kept: well above any column's
/// limit (200 characters of up to 4 bytes), so a longer field is refused
/// by its length, never cut silently.
pub const MAX_FIELD_BYTES: usize = 4096;
/// The most fields of one record that are kept.
pub const MAX_FIELDS: usize = 64;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One field of a record.
#[derive(Debug, Default, Clone)]
pub struct Field {
    /// Its bytes, quotes removed and `""` made `"`; at most
    /// [`MAX_FIELD_BYTES`].
    pub bytes: Vec<u8>,
    /// The line it starts on.
    pub line: u64,
    /// Longer than [`MAX_FIELD_BYTES`]: `bytes` holds the start only.
    pub overlong: bool,
}

impl Field {
    /// The line of byte `offset` of the field: its start line plus the
    /// line breaks before it (a quoted field may span lines).
    pub fn line_of(&self, offset: usize) -> u64 {
        let before = &self.bytes[..offset.min(self.bytes.len())];
        let mut lines = 0;
        for (i, byte) in before.iter().enumerate() {
            match byte {
                b'\n' if i == 0 || before[i - 1] != b'\r' => lines += 1,
                b'\r' => lines += 1,
                _ => {}
            }
        }
        self.line + lines
    }
}

/// One record (a row), as read.
#[derive(Debug, Default)]
pub struct Record {
    /// The line it starts on, 1-based.
    pub line: u64,
    /// Its first [`MAX_FIELDS`] fields.
    pub fields: Vec<Field>,
    /// Fields beyond those, counted but not kept.
    pub dropped_fields: usize,
    /// The first quoting fault in it: the line and what is wrong.
    pub malformed: Option<(u64, &'static str)>,
}

impl Record {
    /// How many fields the record has, kept or not.
    pub fn width(&self) -> usize {
        self.fields.len() + self.dropped_fields
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between records: nothing of the next one read yet.
    Between,
    /// At the start of a field, nothing of it read yet.
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: a closing quote, or the first of `""`.
    QuoteInQuoted,
}

/// Reads records from pieces of a file fed in order.
#[derive(Debug)]
pub struct Reader {
    state: State,
    /// The line the next byte is on.
    line: u64,
    /// The previous byte was a `\r`, so a `\n` now is part of the same
    /// line break.
    after_cr: bool,
    /// Bytes of a byte order mark matched so far at the file's start;
    /// `BOM.len()` once past it.
    seen: usize,
    /// The record being read.
    record: Record,
    /// Fields of earlier records, emptied, to reuse their memory.
    spare: Vec<Field>,
}

impl Default for Reader {
    fn default() -> Self {
        Self {
            state: State::Between,
            line: 1,
            after_cr: false,
            seen: 0,
            record: Record::default(),
            spare: Vec::new(),
        }
    }
}

impl Reader {
    /// Reads `piece`, calling `found` with each record it completes.
    pub fn feed(&mut self, mut piece: &[u8], found: &mut impl FnMut(&Record)) {
        while self.seen < BOM.len() && !piece.is_empty() {
            if piece[0] != BOM[self.seen] {
                self.not_a_bom(found);
                break;
            }
            piece = &piece[1..];
            self.seen += 1;
        }
        let mut at = 0;
        while at < piece.len() {
            // Most bytes are plain text inside a field: take them in runs.
            let ends: fn(&u8) -> bool = match self.state {
                State::Unquoted => |b| matches!(b, b',' | b'\r' | b'\n' | b'"'),
                State::Quoted => |b| matches!(b, b'"' | b'\r' | b'\n'),
                _ => |_| true,
            };
            let run = piece[at..]
                .iter()
                .position(ends)
                .unwrap_or(piece.len() - at);
            if run > 0 {
                self.push_run(&piece[at..at + run]);
                self.after_cr = false;
                at += run;
            } else {
                self.byte(piece[at], found);
                at += 1;
            }
        }
    }

    /// The start of the file looked like a byte order mark but is not one:
    /// what matched so far was data.
    fn not_a_bom(&mut self, found: &mut impl FnMut(&Record)) {
        let matched = self.seen;
        self.seen = BOM.len();
        for &byte in &BOM[..matched] {
            self.byte(byte, found);
        }
    }

    /// Ends the file: completes the last record (a file need not end with
    /// a line break) and reports a quoted field left open.
    pub fn finish(&mut self, found: &mut impl FnMut(&Record)) {
        if self.seen < BOM.len() {
            self.not_a_bom(found);
        }
        if self.state == State::Quoted {
            let opened = self.record.fields.last().map_or(self.line, |f| f.line);
            self.fault(
                opened,
                "a quoted field is never closed: end it with a double quote",
            );
        }
        if self.state != State::Between {
            self.end_record(found);
        }
    }

    fn byte(&mut self, byte: u8, found: &mut impl FnMut(&Record)) {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        if self.state == State::Between {
            match byte {
                // Blank lines, and the `\n` of a `\r\n`, are no record.
                b'\n' if after_cr => return,
                b'\r' | b'\n' => {
                    self.line += 1;
                    self.after_cr = byte == b'\r';
                    return;
                }
                _ => {
                    self.record.line = self.line;
                    self.spare.append(&mut self.record.fields);
                    self.record.dropped_fields = 0;
                    self.record.malformed = None;
                    self.open_field();
                }
            }
        }
        match (self.state, byte) {
            (State::Quoted, b'"') => self.state = State::QuoteInQuoted,
            (State::Quoted, b'\r') => {
                self.push(byte);
                self.line += 1;
                self.after_cr = true;
            }
            (State::Quoted, b'\n') => {
                self.push(byte);
                if !after_cr {
                    self.line += 1;
                }
            }
            (State::Quoted, _) => self.push(byte),
            (State::QuoteInQuoted, b'"') => {
                self.push(b'"');
                self.state = State::Quoted;
            }
            (_, b'\r' | b'\n') => {
                self.line += 1;
                self.after_cr = byte == b'\r';
                self.end_record(found);
            }
            (_, b',') => self.open_field(),
            (State::FieldStart, b'"') => self.state = State::Quoted,
            (State::FieldStart | State::Unquoted, _) => {
                if byte == b'"' {
                    self.fault(
                        self.line,
                        "a double quote inside an unquoted field: quote the whole field and double the quote (\"\")",
                    );
                }
                self.push(byte);
                self.state = State::Unquoted;
            }
            (State::QuoteInQuoted, _) => {
                self.fault(
                    self.line,
                    "text after a closing double quote: quote the whole field and double any quote inside (\"\")",
                );
                self.push(byte);
                self.state = State::Unquoted;
            }
            (State::Between, _) => unreachable!("a record was opened above"),
        }
    }

    /// Starts the record's next field (kept while there are fewer than
    /// [`MAX_FIELDS`], else only counted).
    fn open_field(&mut self) {
        self.state = State::FieldStart;
        if self.record.fields.len() < MAX_FIELDS {
            let mut field = self.spare.pop().unwrap_or_default();
            field.bytes.clear();
            field.line = self.line;
            field.overlong = false;
            self.record.fields.push(field);
        } else {
            self.record.dropped_fields += 1;
        }
    }

    fn push(&mut self, byte: u8) {
        if self.record.dropped_fields > 0 {
            return;
        }
        if let Some(field) = self.record.fields.last_mut() {
            if field.bytes.len() < MAX_FIELD_BYTES {
                field.bytes.push(byte);
            } else {
                field.overlong = true;
            }
        }
    }

    fn push_run(&mut self, run: &[u8]) {
        if self.record.dropped_fields > 0 {
            return;
        }
        if let Some(field) = self.record.fields.last_mut() {
            let room = MAX_FIELD_BYTES - field.bytes.len();
            if run.len() > room {
                field.bytes.extend_from_slice(&run[..room]);
                field.overlong = true;
            } else {
                field.bytes.extend_from_slice(run);
            }
        }
    }

    fn fault(&mut self, line: u64, what: &'static str) {
        self.record.malformed.get_or_insert((line, what));
    }

    fn end_record(&mut self, found: &mut impl FnMut(&Record)) {
        self.state = State::Between;
        found(&self.record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as read: its line, its fields as text, its fault.
    type Read = (u64, Vec<String>, Option<(u64, &'static str)>);

    /// The records of `file` fed in pieces of `size` bytes.
    fn read(file: &[u8], size: usize) -> Vec<Read> {
        let mut reader = Reader::default();
        let mut records = Vec::new();
        let mut found = |r: &Record| {
            records.push((
                r.line,
                r.fields
                    .iter()
                    .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
                    .collect(),
                r.malformed,
            ))
        };
        for piece in file.chunks(size.max(1)) {
            reader.feed(piece, &mut found);
        }
        reader.finish(&mut found);
        records
    }

    fn texts(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn records_and_their_lines_survive_any_split_into_pieces() {
        let file = b"\xEF\xBB\xBFa,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\r\n\r\n\"two\r\nlines\",\"three\nmore\rlines\",z\nlast,,";
        let want = vec![
            (1, texts(&["a", "b", "c"]), None),
            (2, texts(&["x, y", "say \"hi\"", ""]), None),
            (4, texts(&["two\r\nlines", "three\nmore\rlines", "z"]), None),
            (8, texts(&["last", "", ""]), None),
        ];
        for size in [1, 2, 3, 5, 7, 64, 4096] {
            assert_eq!(read(file, size), want, "pieces of {size}");
        }
    }

    #[test]
    fn blank_lines_and_a_missing_last_line_break_are_fine() {
        assert_eq!(read(b"\n\n\r\na\n\n", 3), vec![(4, texts(&["a"]), None)]);
        assert_eq!(read(b"a", 1), vec![(1, texts(&["a"]), None)]);
        assert!(read(b"", 1).is_empty());
        assert!(read(b"\xEF\xBB\xBF", 1).is_empty());
        assert_eq!(
            read(b"\xEF\xBBx", 1),
            vec![(
                1,
                vec![String::from_utf8_lossy(b"\xEF\xBBx").into_owned()],
                None
            )],
            "a broken byte order mark is data"
        );
    }

    #[test]
    fn quoting_faults_are_told_with_their_line() {
        let open = read(b"a\n\"never\nclosed,b\n", 4);
        assert_eq!(open.len(), 2);
        assert_eq!(open[1].0, 2);
        assert_eq!(
            open[1]
                .2
                .map(|(line, what)| (line, what.contains("never closed"))),
            Some((2, true))
        );
        let after = read(b"a\n\"x\"y,b\n", 4);
        assert!(
            after[1]
                .2
                .is_some_and(|(line, what)| line == 2 && what.contains("after a closing"))
        );
        let inside = read(b"a\nx\"y,b\n", 4);
        assert!(
            inside[1]
                .2
                .is_some_and(|(line, what)| line == 2 && what.contains("inside an unquoted"))
        );
    }

    #[test]
    fn huge_fields_and_records_are_bounded_and_counted() {
        let mut file = b"a,".to_vec();
        file.extend(std::iter::repeat_n(b'x', MAX_FIELD_BYTES * 3));
        file.push(b'\n');
        file.extend(std::iter::repeat_n(b',', MAX_FIELDS * 2));
        file.push(b'\n');
        let mut reader = Reader::default();
        let mut seen = Vec::new();
        reader.feed(&file, &mut |r: &Record| {
            seen.push((
                r.fields
                    .iter()
                    .map(|f| (f.bytes.len(), f.overlong))
                    .collect::<Vec<_>>(),
                r.width(),
            ))
        });
        assert_eq!(seen[0].0, [(1, false), (MAX_FIELD_BYTES, true)]);
        assert_eq!(seen[1].0.len(), MAX_FIELDS);
        assert_eq!(seen[1].1, MAX_FIELDS * 2 + 1);
    }

    #[test]
    fn a_fields_bytes_are_placed_on_their_own_line() {
        let field = Field {
            bytes: b"one\r\ntwo\nthree\rfour".to_vec(),
            line: 10,
            overlong: false,
        };
        assert_eq!(field.line_of(0), 10);
        assert_eq!(field.line_of(5), 11);
        assert_eq!(field.line_of(9), 12);
        assert_eq!(field.line_of(15), 13);
    }
}

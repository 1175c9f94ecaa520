//! Just enough RESP for the proxy to cut its streams into frames: where one
//! complete frame (RESP2 or RESP3) ends, and the name of a client's command.
//!
//! Nothing is decoded beyond that: the proxy forwards the original bytes.
//! The scan is iterative (a count of elements still to read), so a deeply
//! nested or hostile input cannot overflow the stack.

/// What the start of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan<T> {
    /// A complete item, `len` bytes long.
    Complete { item: T, len: usize },
    /// The start of an item whose end has not arrived yet.
    Incomplete,
    /// Bytes that are not RESP: the stream cannot be cut any further.
    Invalid,
}

/// A command a client sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    /// The command's name in upper case; `None` for an empty command
    /// (`*0`, a blank inline line), which Redis skips without replying.
    pub name: Option<String>,
}

/// Larger bulk strings or aggregates than this are taken for garbage.
const MAX_LEN: u64 = 1 << 32;

/// How long the complete frame at the start of `buffer` is: for
/// `+OK\r\n+QUEUED`, 5 bytes.
pub fn frame(buffer: &[u8]) -> Scan<()> {
    let mut at = 0;
    // Elements still to read: aggregates add theirs as they are met.
    let mut remaining: u64 = 1;
    while remaining > 0 {
        remaining -= 1;
        let Some(&kind) = buffer.get(at) else {
            return Scan::Incomplete;
        };
        let Some((line, next)) = line(buffer, at + 1) else {
            return Scan::Incomplete;
        };
        let Ok(line) = line else {
            return Scan::Invalid;
        };
        at = next;
        let added = match kind {
            // Simple string, error, integer, null, double, boolean, big number.
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => 0,
            // Bulk string, bulk error, verbatim string: a length, then the bytes.
            b'$' | b'!' | b'=' => {
                match length(line, kind == b'$') {
                    Some(None) => {}
                    Some(Some(len)) => {
                        let end = at + len as usize;
                        if buffer.len() < end + 2 {
                            return Scan::Incomplete;
                        }
                        if &buffer[end..end + 2] != b"\r\n" {
                            return Scan::Invalid;
                        }
                        at = end + 2;
                    }
                    None => return Scan::Invalid,
                }
                0
            }
            // Array, set, push: that many elements follow.
            b'*' | b'~' | b'>' => match length(line, kind == b'*') {
                Some(count) => count.unwrap_or(0),
                None => return Scan::Invalid,
            },
            // Map: that many key/value pairs.
            b'%' => match length(line, false) {
                Some(Some(pairs)) => 2 * pairs,
                _ => return Scan::Invalid,
            },
            // Attribute: its pairs, then the frame they describe.
            b'|' => match length(line, false) {
                Some(Some(pairs)) => 2 * pairs + 1,
                _ => return Scan::Invalid,
            },
            _ => return Scan::Invalid,
        };
        remaining += added;
    }
    Scan::Complete { item: (), len: at }
}

/// The complete command at the start of `buffer`: an array of bulk strings
/// (what redis-rs sends) or an inline command (a line of words).
pub fn command(buffer: &[u8]) -> Scan<Command> {
    match buffer.first() {
        None => Scan::Incomplete,
        Some(b'*') => match frame(buffer) {
            Scan::Complete { len, .. } => Scan::Complete {
                item: Command {
                    name: array_name(&buffer[..len]),
                },
                len,
            },
            Scan::Incomplete => Scan::Incomplete,
            Scan::Invalid => Scan::Invalid,
        },
        Some(_) => inline(buffer),
    }
}

/// The first element of a complete array, if it is a bulk string.
fn array_name(array: &[u8]) -> Option<String> {
    let (_, first) = line(array, 1)?;
    let (len, start) = line(array, first.checked_add(1)?)?;
    if array.get(first) != Some(&b'$') {
        return None;
    }
    let len = length(len.ok()?, true)??;
    let name = array.get(start..start + len as usize)?;
    Some(String::from_utf8_lossy(name).to_uppercase())
}

/// An inline command: its first word is the name.
fn inline(buffer: &[u8]) -> Scan<Command> {
    let Some(newline) = buffer.iter().position(|&byte| byte == b'\n') else {
        return Scan::Incomplete;
    };
    let text = String::from_utf8_lossy(&buffer[..newline]);
    let name = text.split_whitespace().next().map(str::to_uppercase);
    Scan::Complete {
        item: Command { name },
        len: newline + 1,
    }
}

/// The line starting at `start` (without its `\r\n`) and where the next
/// one starts; `None` while the line is not complete, `Err` when a `\r` is
/// not followed by `\n`.
fn line(buffer: &[u8], start: usize) -> Option<(Result<&[u8], ()>, usize)> {
    let rest = buffer.get(start..)?;
    let cr = rest.iter().position(|&byte| byte == b'\r')?;
    match rest.get(cr + 1) {
        None => None,
        Some(b'\n') => Some((Ok(&rest[..cr]), start + cr + 2)),
        Some(_) => Some((Err(()), start + cr + 1)),
    }
}

/// A length header: `Some(Some(n))`, `Some(None)` for the RESP2 null
/// (`-1`, only where `null_allowed`), `None` when it is not a length.
fn length(text: &[u8], null_allowed: bool) -> Option<Option<u64>> {
    if null_allowed && text == b"-1" {
        return Some(None);
    }
    if text.is_empty() || text.len() > 12 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    (value <= MAX_LEN).then_some(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(len: usize) -> Scan<()> {
        Scan::Complete { item: (), len }
    }

    #[test]
    fn simple_frames_end_at_their_line() {
        assert_eq!(frame(b"+OK\r\n"), complete(5));
        assert_eq!(frame(b"-ERR no\r\n+OK\r\n"), complete(9));
        assert_eq!(frame(b":42\r\n"), complete(5));
        assert_eq!(frame(b"$3\r\nfoo\r\n"), complete(9));
        assert_eq!(frame(b"$-1\r\n"), complete(5));
        assert_eq!(frame(b"*-1\r\n"), complete(5));
        assert_eq!(frame(b"$0\r\n\r\n"), complete(6));
    }

    #[test]
    fn bulk_strings_may_hold_crlf() {
        assert_eq!(frame(b"$4\r\na\r\nb\r\n"), complete(10));
    }

    #[test]
    fn nested_arrays_are_one_frame() {
        let nested = b"*2\r\n*2\r\n:1\r\n$1\r\na\r\n*0\r\n";
        assert_eq!(frame(nested), complete(nested.len()));
        let mut followed = nested.to_vec();
        followed.extend_from_slice(b"+OK\r\n");
        assert_eq!(frame(&followed), complete(nested.len()));
    }

    #[test]
    fn resp3_types_are_frames() {
        for single in [
            &b"_\r\n"[..],
            b",3.14\r\n",
            b"#t\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
            b"~3\r\n+a\r\n+b\r\n_\r\n",
            b">3\r\n+message\r\n+chan\r\n$2\r\nhi\r\n",
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2\r\n",
        ] {
            assert_eq!(frame(single), complete(single.len()), "{single:?}");
        }
    }

    #[test]
    fn every_cut_of_a_frame_is_incomplete() {
        let whole = b"%2\r\n$5\r\nhello\r\n*2\r\n:1\r\n,2.5\r\n|1\r\n+a\r\n+b\r\n#f\r\n:3\r\n";
        assert_eq!(frame(whole), complete(whole.len()));
        for cut in 0..whole.len() {
            assert_eq!(frame(&whole[..cut]), Scan::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        for garbage in [
            &b"hello\r\n"[..],
            b"*x\r\n",
            b"$-2\r\n",
            b"$3\r\nfoobar\r\n",
            b"*1\r\n?\r\n",
            b"+OK\rX",
            b"%-1\r\n",
            b"$99999999999999999999\r\n",
            b"*4294967297\r\n",
        ] {
            assert_eq!(frame(garbage), Scan::Invalid, "{garbage:?}");
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let deep = b"*1\r\n".repeat(200_000);
        assert_eq!(frame(&deep), Scan::Incomplete);
        let mut closed = deep.clone();
        closed.extend_from_slice(b":1\r\n");
        assert_eq!(frame(&closed), complete(closed.len()));
    }

    #[test]
    fn commands_are_named_in_upper_case() {
        let set = b"*3\r\n$3\r\nset\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n";
        assert_eq!(
            command(set),
            Scan::Complete {
                item: Command {
                    name: Some("SET".into())
                },
                len: 27
            }
        );
        assert_eq!(command(&set[..20]), Scan::Incomplete);
        assert_eq!(
            command(b"*0\r\n"),
            Scan::Complete {
                item: Command { name: None },
                len: 4
            }
        );
    }

    #[test]
    fn inline_commands_are_lines() {
        assert_eq!(
            command(b"ping\r\nget k\r\n"),
            Scan::Complete {
                item: Command {
                    name: Some("PING".into())
                },
                len: 6
            }
        );
        assert_eq!(command(b"get k"), Scan::Incomplete);
        assert_eq!(
            command(b"\r\n"),
            Scan::Complete {
                item: Command { name: None },
                len: 2
            }
        );
    }

    #[test]
    fn malformed_commands_are_invalid() {
        assert_eq!(command(b"*2\r\n$3\r\nGETX\r\n"), Scan::Invalid);
        assert_eq!(command(b"*z\r\n"), Scan::Invalid);
    }
}

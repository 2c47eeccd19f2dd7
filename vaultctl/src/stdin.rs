//! Reading standard input without leaving copies behind: it carries PANs
//! (`tokenize`) and args that may hold one (`call`).

/// Longest PAN line read from stdin (a PAN is at most 19 digits).
pub const PAN_LINE_MAX: usize = 256;
/// Longest `call` args read from stdin.
pub const ARGS_MAX: usize = 1 << 20;

/// Reads stdin (up to a newline when `line`, else to its end) without a
/// buffer of its own: std's `Stdin` keeps what it read in an 8 KiB buffer
/// for the life of the process, and a growing `String` frees its old
/// blocks with the bytes in them. The one block here is sized once and
/// wiped on drop; input longer than `max` is refused.
pub fn read_stdin_wiped(max: usize, line: bool) -> std::io::Result<zeroize::Zeroizing<Vec<u8>>> {
    use std::io::Read;
    use std::os::fd::AsFd;
    let mut fd = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut out = zeroize::Zeroizing::new(vec![0u8; max]);
    let mut n = 0;
    loop {
        if n == max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("more than {max} bytes"),
            ));
        }
        // A line is read a byte at a time, so nothing after it is taken.
        let want = if line { n + 1 } else { max };
        let got = fd.read(&mut out[n..want])?;
        if got == 0 {
            break;
        }
        n += got;
        if line && out[n - 1] == b'\n' {
            break;
        }
    }
    out.truncate(n);
    Ok(out)
}

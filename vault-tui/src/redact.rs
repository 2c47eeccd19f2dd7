//! Defence in depth for free text from the daemon (error messages, event
//! details): the protocol promises they hold no card data, and the console
//! still masks any run of 12 or more digits before it reaches the screen.

/// Digits in a row from which a run is treated as a possible card number.
const MIN_RUN: usize = 12;

/// `text` with every run of 12+ digits replaced by `x`s, last four kept.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut out, &mut run);
            out.push(c);
        }
    }
    flush(&mut out, &mut run);
    out
}

fn flush(out: &mut String, run: &mut String) {
    if run.len() >= MIN_RUN {
        let keep = run.len() - 4;
        out.extend(std::iter::repeat_n('x', keep));
        out.push_str(&run[keep..]);
    } else {
        out.push_str(run);
    }
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn masks_long_digit_runs_only() {
        assert_eq!(
            redact("declined 4111111111111111 at 503"),
            "declined xxxxxxxxxxxx1111 at 503"
        );
        assert_eq!(redact("timeout after 30000 ms"), "timeout after 30000 ms");
        assert_eq!(redact("5555555555554444"), "xxxxxxxxxxxx4444");
    }
}

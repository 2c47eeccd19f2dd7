//! A read-ahead buffer for a connection that keeps no card data: bytes are
//! wiped from it as soon as they are handed on, so between requests the
//! buffer holds only what the client sent and the server has not read
//! yet. (tokio's `BufReader` keeps every consumed byte until it happens
//! to be overwritten, and frees its block with them.)

use tokio::io::AsyncReadExt;
use tokio::net::unix::OwnedReadHalf;
use zeroize::{Zeroize, Zeroizing};

pub(super) struct ReadAhead {
    inner: OwnedReadHalf,
    buf: Zeroizing<Vec<u8>>,
    /// `buf[pos..end]` is read from the socket and not handed on yet.
    pos: usize,
    end: usize,
}

impl ReadAhead {
    pub(super) fn new(inner: OwnedReadHalf, capacity: usize) -> ReadAhead {
        ReadAhead {
            inner,
            buf: Zeroizing::new(vec![0; capacity.max(1)]),
            pos: 0,
            end: 0,
        }
    }

    /// Fills `out` from the buffer, reading the socket when it runs dry.
    /// Cancel-safe between socket reads (each is), like `read_exact` it
    /// may leave `out` partly filled when cancelled mid-way.
    pub(super) async fn read_exact(&mut self, out: &mut [u8]) -> std::io::Result<()> {
        let mut done = self.take(out);
        while done < out.len() {
            let rest = &mut out[done..];
            if rest.len() >= self.buf.len() {
                // Larger than the buffer: straight into the caller's.
                let n = self.inner.read(rest).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                done += n;
            } else {
                if self.fill().await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                done += self.take(&mut out[done..]);
            }
        }
        Ok(())
    }

    /// One byte; `Ok(None)` at end of stream. Cancel-safe.
    pub(super) async fn read_byte(&mut self) -> std::io::Result<Option<u8>> {
        if self.pos == self.end && self.fill().await? == 0 {
            return Ok(None);
        }
        let mut b = [0u8; 1];
        self.take(&mut b);
        Ok(Some(b[0]))
    }

    /// Copies what is buffered into `out` and wipes it from the buffer.
    fn take(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.buf[self.pos..self.pos + n].zeroize();
        self.pos += n;
        n
    }

    /// Reads what the socket has into the (empty) buffer.
    async fn fill(&mut self) -> std::io::Result<usize> {
        debug_assert_eq!(self.pos, self.end);
        self.pos = 0;
        self.end = 0;
        let n = self.inner.read(&mut self.buf[..]).await?;
        self.end = n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn hands_on_every_byte_in_order_and_keeps_none_it_handed_on() {
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let (rd, _wr) = a.into_split();
        let mut r = ReadAhead::new(rd, 8);
        let sent: Vec<u8> = (1..=40u8).collect();
        b.write_all(&sent).await.unwrap();
        drop(b);
        let mut got = vec![r.read_byte().await.unwrap().unwrap()];
        let mut three = [0u8; 3];
        r.read_exact(&mut three).await.unwrap();
        got.extend_from_slice(&three);
        // Nothing handed on stays in the buffer.
        assert!(r.buf[..r.pos].iter().all(|&b| b == 0), "{:?}", &r.buf[..]);
        // Larger than the buffer: partly from it, the rest straight in.
        let mut big = [0u8; 20];
        r.read_exact(&mut big).await.unwrap();
        got.extend_from_slice(&big);
        while let Some(b) = r.read_byte().await.unwrap() {
            got.push(b);
        }
        assert_eq!(got, sent);
        assert!(r.buf.iter().all(|&b| b == 0));
        let mut more = [0u8; 1];
        assert!(r.read_exact(&mut more).await.is_err(), "end of stream");
    }
}

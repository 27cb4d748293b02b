//! A guest's stderr: never printed (a guest could flood the log), but its last bytes are kept
//! to explain a trap, since that is where a panic or an uncaught exception writes its message.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// How much of the end of a guest's stderr is kept.
const TAIL: usize = 2048;

#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    /// Forgets what was written (at the start of each call, so a trap is explained by its own).
    pub fn clear(&self) {
        self.0.lock().expect("stderr lock").clear();
    }

    /// What the guest wrote since [`StderrTail::clear`], on one line, without Rust's advice to
    /// set `RUST_BACKTRACE`; `None` when it wrote nothing.
    pub fn text(&self) -> Option<String> {
        let bytes: Vec<u8> = self
            .0
            .lock()
            .expect("stderr lock")
            .iter()
            .copied()
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE=1`"))
            .collect();
        (!lines.is_empty()).then(|| lines.join(" "))
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut tail = self.0.lock().expect("stderr lock");
        tail.extend(buf.iter().rev().take(TAIL).rev());
        let excess = tail.len().saturating_sub(TAIL);
        tail.drain(..excess);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn keeps_the_end_on_one_line() {
        let tail = StderrTail::default();
        assert_eq!(tail.text(), None);
        let mut w = Box::into_pin(tail.async_stream());
        w.write_all(&vec![b'x'; 5000]).await.unwrap();
        w.write_all(b"\nthread '<unnamed>' panicked at src/lib.rs:1:1:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n").await.unwrap();
        let text = tail.text().unwrap();
        assert!(text.ends_with("panicked at src/lib.rs:1:1: boom"), "{text}");
        assert!(text.len() <= TAIL, "{}", text.len());
        tail.clear();
        assert_eq!(tail.text(), None);
    }
}

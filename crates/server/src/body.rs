//! The response body: either whole bytes or a stream fed by a task through a
//! bounded channel (container logs). When the client goes away hyper drops
//! the body, the channel closes and the feeding task stops.
//!
//! A streamed body is flushed after every chunk, as upstream's
//! `getContainerLogs` (`pkg/kubelet/server/server.go`) writes through a
//! `flushwriter`: after each data frame the body answers `Pending` once, so
//! hyper writes out what it holds before it can see the end of the stream.
//! The end (HTTP/1.1's terminating `0\r\n\r\n` chunk) then never shares a
//! write, and so a TLS record, with the last data. This matters to Go
//! clients: when both are in one record, Go's chunked reader returns the
//! data together with `io.EOF`, and the API server's websocket log streamer
//! (`wsstream.messageCopy`, `k8s.io/apimachinery/pkg/util/httpstream/wsstream`)
//! checks the error before the byte count and drops that data: `kubectl logs`
//! worked while the same log read over a websocket came back empty
//! (`[sig-node] Pods should support retrieving logs from the container over
//! websockets`).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// A response body.
pub(crate) enum ResponseBody {
    /// Everything at once (`None` once sent).
    Full(Option<Bytes>),
    /// Chunks as they come, each flushed before the next poll sees more.
    Channel {
        /// The chunks; closed by the feeding task at the end.
        rx: mpsc::Receiver<Bytes>,
        /// A chunk was just handed out: answer `Pending` once so that hyper
        /// flushes it.
        flush_pending: bool,
    },
}

impl ResponseBody {
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(b.into()))
    }

    pub(crate) fn empty() -> Self {
        ResponseBody::Full(None)
    }

    pub(crate) fn channel(rx: mpsc::Receiver<Bytes>) -> Self {
        ResponseBody::Channel {
            rx,
            flush_pending: false,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Channel { rx, flush_pending } => {
                if std::mem::take(flush_pending) {
                    // hyper flushes its write buffer when the body is not
                    // ready, then polls again on this wake-up.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let frame = std::task::ready!(rx.poll_recv(cx));
                *flush_pending = frame.is_some();
                Poll::Ready(frame.map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Channel { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

    /// A connection that keeps each write the server makes apart.
    struct RecordingIo {
        inner: tokio::io::DuplexStream,
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl AsyncRead for RecordingIo {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for RecordingIo {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = &r {
                self.writes.lock().unwrap().push(buf[..*n].to_vec());
            }
            r
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[test]
    fn a_chunk_is_handed_out_then_flushed_before_the_end() {
        let (tx, rx) = mpsc::channel(2);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        drop(tx);
        let mut body = ResponseBody::channel(rx);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut poll = || Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(poll(), Poll::Ready(Some(Ok(f))) if f.data_ref().is_some()));
        assert!(poll().is_pending(), "no flush point after the chunk");
        assert!(matches!(poll(), Poll::Ready(None)));
    }

    /// The whole log is ready and the stream already closed when hyper
    /// starts writing (a short log read without `follow`): the last data
    /// chunk and the terminating chunk must still go out in two writes.
    #[tokio::test]
    async fn the_end_of_a_streamed_body_never_shares_a_write_with_its_data() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let writes = Arc::new(Mutex::new(Vec::new()));
        let io = RecordingIo {
            inner: server,
            writes: writes.clone(),
        };
        let service = hyper::service::service_fn(|_req| async {
            let (tx, rx) = mpsc::channel(2);
            tx.try_send(Bytes::from_static(b"container is alive\n"))
                .unwrap();
            drop(tx);
            Ok::<_, Infallible>(hyper::Response::new(ResponseBody::channel(rx)))
        });
        let conn = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), service),
        );
        let mut client = client;
        client
            .write_all(b"GET /containerLogs/a/b/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        client.read_to_end(&mut response).await.unwrap();
        conn.await.unwrap().unwrap();

        let response = String::from_utf8(response).unwrap();
        assert!(
            response.ends_with("13\r\ncontainer is alive\n\r\n0\r\n\r\n"),
            "{response}"
        );
        let writes = writes.lock().unwrap();
        let data = writes
            .iter()
            .position(|w| w.windows(18).any(|x| x == b"container is alive"))
            .expect("the data was written");
        assert!(
            !writes[data].ends_with(b"0\r\n\r\n"),
            "the terminating chunk went out with the data: {:?}",
            writes
                .iter()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
        );
        assert!(writes[data + 1..].iter().any(|w| w.ends_with(b"0\r\n\r\n")));
    }
}

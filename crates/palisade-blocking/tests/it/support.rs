//! A server of this crate on a free port, one thread per connection, bounded in time.

use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use palisade_blocking::{Acceptor, Error, WebSocket};

/// How long a test waits for what its server thread reports.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A server that accepts one connection with `acceptor` and hands the result to `handler`;
/// what the handler returns comes back through [`OneShot::result`].
pub(crate) struct OneShot<T> {
    pub(crate) url: String,
    done: mpsc::Receiver<T>,
    _thread: JoinHandle<()>,
}

impl<T: Send + 'static> OneShot<T> {
    pub(crate) fn start(
        acceptor: Acceptor,
        handler: impl FnOnce(Result<WebSocket, Error>) -> T + Send + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let (tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let _ = tx.send(handler(acceptor.accept(stream)));
        });
        Self { url, done, _thread: thread }
    }

    /// What the handler returned.
    pub(crate) fn result(&self) -> T {
        self.done.recv_timeout(WAIT).expect("the server thread reports in time")
    }

    /// The address, for raw TCP clients.
    pub(crate) fn tcp(&self) -> TcpStream {
        let addr = self.url.trim_start_matches("ws://").trim_end_matches('/');
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp
    }
}

/// Echoes until the connection ends; returns how it ended.
pub(crate) fn echo(ws: Result<WebSocket, Error>) -> Error {
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(err) => return err,
    };
    loop {
        match ws.recv() {
            Ok(message) => {
                if let Err(err) = ws.send(message) {
                    return err;
                }
            }
            Err(err) => return err,
        }
    }
}

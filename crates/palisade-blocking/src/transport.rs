//! The byte streams a blocking connection runs over: anything readable and writable whose reads
//! and writes can be given a deadline, so that keepalive, the close timeout and slow peers are
//! handled by a thread that would otherwise block for ever.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// A blocking byte stream under a [`crate::WebSocket`].
///
/// Implemented for [`TcpStream`], for Unix domain sockets, and (feature `rustls`) for rustls'
/// blocking `StreamOwned` over a `TcpStream`, client and server side. Implement it for another
/// stream to run WebSocket over it: the connection needs the two timeouts (the socket read
/// timeout is how keepalive pings and deadlines fire while a caller waits in `recv`) and a way
/// to end its write side.
pub trait Transport: Read + Write + Send {
    /// Sets how long a read may block (`None`: for ever). A read that runs out of time must
    /// fail with [`io::ErrorKind::WouldBlock`] or [`io::ErrorKind::TimedOut`], as
    /// [`TcpStream::set_read_timeout`] does.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Sets how long a write may block (`None`: for ever), with the same error kinds.
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Ends the write side (TCP: a FIN; TLS: `close_notify`, then the FIN). Reading goes on.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Sends small writes at once (TCP: `TCP_NODELAY`). Without it, Nagle's algorithm holds a
    /// small frame back until the peer's delayed acknowledgement, up to 40 ms per message.
    /// The default does nothing, for streams without the notion.
    fn set_nodelay(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn set_nodelay(&mut self) -> io::Result<()> {
        TcpStream::set_nodelay(self, true)
    }
}

#[cfg(unix)]
impl Transport for std::os::unix::net::UnixStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_write_timeout(self, timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

#[cfg(feature = "rustls")]
impl Transport for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush()?;
        self.sock.shutdown(Shutdown::Write)
    }

    fn set_nodelay(&mut self) -> io::Result<()> {
        self.sock.set_nodelay(true)
    }
}

#[cfg(feature = "rustls")]
impl Transport for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush()?;
        self.sock.shutdown(Shutdown::Write)
    }

    fn set_nodelay(&mut self) -> io::Result<()> {
        self.sock.set_nodelay(true)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_read_timeout(timeout)
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_write_timeout(timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        (**self).shutdown_write()
    }

    fn set_nodelay(&mut self) -> io::Result<()> {
        (**self).set_nodelay()
    }
}

/// Whether `err` is a read or write that ran out of its time (the kinds differ by platform).
pub(crate) fn is_timeout(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

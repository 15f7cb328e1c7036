//! What the two peer echo servers share: the `--addr` argument, a current-thread runtime, and an
//! accept loop that runs one task per connection, as palisade's `examples/echo.rs` does.

use std::fmt::Display;
use std::future::Future;

use tokio::net::{TcpListener, TcpStream};

/// Serves `echo` on `--addr HOST:PORT` (`default_addr` without it): prints
/// `listening on ws://ADDR` once bound, then runs `echo` on every accepted connection in a task
/// of its own and prints its error, if any. `name` is the binary's, for the usage line.
pub fn serve<F, Fut, E>(
    name: &str,
    default_addr: &str,
    echo: F,
) -> Result<(), Box<dyn std::error::Error>>
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [] => default_addr.to_owned(),
        [flag, addr] if flag == "--addr" => addr.clone(),
        _ => return Err(format!("usage: {name} [--addr HOST:PORT]").into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&addr).await?;
        println!("listening on ws://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let connection = echo(stream);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    eprintln!("connection failed: {e}");
                }
            });
        }
    })
}

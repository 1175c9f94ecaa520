//! A loopback TCP proxy between the code under test and a redis-server,
//! controlled from the test: it can hold back what clients send (the
//! server sees nothing until [`Proxy::release`]), which makes one
//! instance's Redis traffic arrive late while other instances talk to the
//! server directly.
//!
//! Runs on the test's Tokio runtime; every task ends when the [`Proxy`] is
//! dropped (its listener and connections close with it).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy to `127.0.0.1:<target port>` on its own free loopback port.
pub struct Proxy {
    port: u16,
    holding: watch::Sender<bool>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to the server on `target_port`.
    pub async fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let (holding, _) = watch::channel(false);
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let acceptor = tokio::spawn(accept(listener, target, holding.clone()));
        Proxy {
            port,
            holding,
            acceptor,
        }
    }

    /// The URL clients use to reach the server through the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// From now on, bytes clients send are kept here, not forwarded.
    pub fn hold(&self) {
        self.holding.send_replace(true);
    }

    /// Forwards what was held, in order, and everything after it.
    pub fn release(&self) {
        self.holding.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, holding: watch::Sender<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(target).await else {
            continue;
        };
        connections.spawn(forward(client, server, holding.subscribe()));
    }
}

/// Copies both ways; client-to-server bytes wait while the proxy holds.
async fn forward(client: TcpStream, server: TcpStream, mut holding: watch::Receiver<bool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            if holding.wait_for(|held| !held).await.is_err() {
                return;
            }
            if server_write.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

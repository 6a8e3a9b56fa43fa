//! An HTTP/1.1 server on 127.0.0.1 for the download tests (byte ranges,
//! dropped and stalled connections, slow bodies, redirects, 404), written by
//! hand so that no test touches the internet.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the server answers one path.
#[derive(Clone)]
pub enum Route {
    /// The file, with byte ranges.
    File(Arc<Vec<u8>>),
    /// The file, but the first `drops` responses close the connection after
    /// `cut` bytes of their body.
    Dropping {
        data: Arc<Vec<u8>>,
        cut: usize,
        drops: usize,
    },
    /// The file, but the first response stops sending after `cut` bytes and
    /// keeps the connection open for `stall`.
    Stalling {
        data: Arc<Vec<u8>>,
        cut: usize,
        stall: Duration,
    },
    /// The file in `chunks` pieces with `pause` between them.
    Slow {
        data: Arc<Vec<u8>>,
        chunks: usize,
        pause: Duration,
    },
    /// 302 to another path.
    Redirect(String),
}

/// One request as the server saw it: path and `Range` header.
pub type Seen = (String, Option<String>);

/// A hand-written HTTP/1.1 server on 127.0.0.1 (a free port) answering
/// [`Route`]s, each connection on its own thread; stopped on drop.
pub struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving `routes` (path, answer).
    pub fn start(routes: Vec<(&str, Route)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<HashMap<String, Route>> = Arc::new(
            routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), r))
                .collect(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (routes, seen) = (routes.clone(), seen.clone());
                    std::thread::spawn(move || {
                        let _ = serve(conn, &routes, &seen);
                    });
                }
            })
        };
        Server {
            port,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests asked for `path`.
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|(p, _)| p == path).count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request and closes the connection.
fn serve(
    conn: TcpStream,
    routes: &HashMap<String, Route>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let earlier = {
        let mut s = seen.lock().unwrap();
        let n = s.iter().filter(|(p, _)| *p == path).count();
        s.push((path.clone(), range.clone()));
        n
    };
    let mut conn = conn;
    let Some(route) = routes.get(&path) else {
        let body = b"not found\n";
        write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        return conn.write_all(body);
    };
    let (data, cut, stall, chunks, pause) = match route {
        Route::Redirect(to) => {
            return write!(
                conn,
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Route::File(d) => (d, None, None, 1, Duration::ZERO),
        Route::Dropping { data, cut, drops } => (
            data,
            (earlier < *drops).then_some(*cut),
            None,
            1,
            Duration::ZERO,
        ),
        Route::Stalling { data, cut, stall } => {
            let first = earlier == 0;
            (
                data,
                first.then_some(*cut),
                first.then_some(*stall),
                1,
                Duration::ZERO,
            )
        }
        Route::Slow {
            data,
            chunks,
            pause,
        } => (data, None, None, *chunks, *pause),
    };
    let len = data.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    let from = match start {
        Some(s) if s >= len => {
            return write!(
                conn,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some(s) => {
            write!(
                conn,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\n",
                len - 1
            )?;
            s
        }
        None => {
            write!(conn, "HTTP/1.1 200 OK\r\n")?;
            0
        }
    };
    write!(
        conn,
        "Content-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
        len - from
    )?;
    let body = &data[from..];
    if let Some(cut) = cut {
        conn.write_all(&body[..cut.min(body.len())])?;
        conn.flush()?;
        if let Some(stall) = stall {
            std::thread::sleep(stall);
        }
        return conn.shutdown(Shutdown::Both);
    }
    let step = body.len().div_ceil(chunks).max(1);
    for piece in body.chunks(step) {
        conn.write_all(piece)?;
        conn.flush()?;
        std::thread::sleep(pause);
    }
    Ok(())
}

/// A tiny zoo-style VGG16 (input 32x32, 10 classes) as ONNX bytes, to serve.
pub fn tiny_model() -> Arc<Vec<u8>> {
    use crate::synth::{vgg16, VggSpec, VggStyle};
    Arc::new(vgg16(&VggSpec::tiny(VggStyle::Zoo)).to_bytes())
}

/// The names in folder `dir`, sorted (none if it does not exist): what a
/// download left in the cache.
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

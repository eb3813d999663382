//! A small HTTP/1.1 client over TcpStream: full control of the Host header and raw status/headers,
//! keep-alive connections for load loops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    /// The echo backend that answered (header `x-backend`).
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }
    pub fn reason(&self) -> &str {
        self.header("x-alb-err-reason").unwrap_or("")
    }
}

/// One keep-alive connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    port: u16,
    closed: bool,
}

impl Conn {
    pub fn open(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        Ok(Conn { reader: BufReader::new(s), port, closed: false })
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Resp> {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: 127.0.0.1:{}\r\n", self.port));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "PUT" || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        if self.closed {
            *self = Conn::open(self.port)?;
        }
        let s = self.reader.get_mut();
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let r = read_response(&mut self.reader, method == "HEAD")?;
        // The server said it closes after this response (e.g. keepalive_requests reached): reconnect next time.
        self.closed = r.header("connection").map(|v| v.eq_ignore_ascii_case("close")).unwrap_or(false);
        Ok(r)
    }
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

fn read_response(r: &mut BufReader<TcpStream>, head: bool) -> std::io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before a response"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let find =
        |n: &str| headers.iter().find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if head || status == 204 || status == 304 {
    } else if let Some(len) = find("content-length") {
        let n: usize = len.parse().map_err(|_| bad(format!("bad content-length {len}")))?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if find("transfer-encoding").map(|v| v.eq_ignore_ascii_case("chunked")).unwrap_or(false) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk {line:?}")))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// One request on a fresh connection.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut c = Conn::open(port).unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    c.send(method, path, headers, body).unwrap_or_else(|e| panic!("{method} 127.0.0.1:{port}{path}: {e}"))
}

pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(port, "GET", path, headers, b"")
}

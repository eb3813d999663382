//! tcp and udp Frontends (nginx stream module, rendered upstreams): weighted balancing over real TCP/UDP echo
//! servers on 127.0.0.1, and an L4 endpoint change (graceful reload) during HTTP keep-alive load.

use crate::harness::{free_port, Backend, Conn, Standalone};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TCP echo server: every line read is answered `<name>:<line>`. Runs until the test process ends.
fn tcp_echo(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().expect("clone");
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    if w.write_all(format!("{name}:{line}\n").as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A UDP echo server: every datagram is answered `<name>:<datagram>`.
fn udp_echo(name: &'static str) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
            let _ = s.send_to(reply.as_bytes(), from);
        }
    });
    port
}

/// One TCP connection through the gateway: sends `msg`, returns the answer line (without newline).
fn tcp_call(port: u16, msg: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{msg}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// One datagram from a fresh socket (a new UDP session for nginx): the answer.
fn udp_call(port: u16, msg: &str) -> std::io::Result<String> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.send_to(msg.as_bytes(), ("127.0.0.1", port))?;
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).to_string())
}

/// Service `name` with one port 80 of `proto` (`TCP`/`UDP`) whose endpoints are 127.0.0.1:`ports`.
fn service(name: &str, proto: &str, ports: &[u16]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: p, port: 80, protocol: {proto}}}]\n"
    );
    for port in ports {
        s.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{port}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: p, port: {port}, protocol: {proto}}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n"
        ));
    }
    s
}

/// A Frontend of `protocol` whose serviceGroup is `(service, weight)`s.
fn frontend(name: &str, port: u16, protocol: &str, services: &[(&str, u32)]) -> String {
    let svcs: String = services
        .iter()
        .map(|(s, w)| format!("      - {{name: {s}, namespace: default, port: 80, weight: {w}}}\n"))
        .collect();
    format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e}}\nspec:\n  port: {port}\n  protocol: {protocol}\n  serviceGroup:\n    services:\n{svcs}"
    )
}

fn count(answers: &[String], name: &str) -> usize {
    answers.iter().filter(|a| a.starts_with(&format!("{name}:"))).count()
}

#[test]
fn tcp_and_udp_frontends_balance_by_weight() {
    let (t1, t2) = (tcp_echo("t1"), tcp_echo("t2"));
    let (u1, u2) = (udp_echo("u1"), udp_echo("u2"));
    let (tport, uport) = (free_port(), free_port());
    let gw = Standalone::start(&[
        (
            "svc.yaml",
            [
                service("t1", "TCP", &[t1]),
                service("t2", "TCP", &[t2]),
                service("u1", "UDP", &[u1]),
                service("u2", "UDP", &[u2]),
            ]
            .join("---\n"),
        ),
        (
            "fts.yaml",
            [
                frontend("ft-tcp", tport, "tcp", &[("t1", 25), ("t2", 75)]),
                // the same number for udp does not conflict with tcp
                frontend("ft-udp", uport, "udp", &[("u1", 50), ("u2", 50)]),
            ]
            .join("---\n"),
        ),
    ]);
    gw.proc
        .wait_log(&format!("listening on 127.0.0.1:{tport}/tcp (frontend ft-tcp, 2 backends)"), Duration::from_secs(1));
    gw.proc
        .wait_log(&format!("listening on 127.0.0.1:{uport}/udp (frontend ft-udp, 2 backends)"), Duration::from_secs(1));

    let answers: Vec<String> =
        (0..200).map(|i| tcp_call(tport, &format!("m{i}")).expect("tcp through gateway")).collect();
    assert!(answers.iter().enumerate().all(|(i, a)| a.ends_with(&format!(":m{i}"))), "echoed: {answers:?}");
    let (n1, n2) = (count(&answers, "t1"), count(&answers, "t2"));
    eprintln!("tcp weights 25:75 over 200 connections: t1={n1} t2={n2}");
    assert_eq!(n1 + n2, 200);
    assert!((35..=65).contains(&n1), "t1 should get ~50 of 200 (weight 1:3): t1={n1} t2={n2}");

    let answers: Vec<String> =
        (0..100).map(|i| udp_call(uport, &format!("d{i}")).expect("udp through gateway")).collect();
    assert!(answers.iter().enumerate().all(|(i, a)| a.ends_with(&format!(":d{i}"))), "echoed: {answers:?}");
    let (n1, n2) = (count(&answers, "u1"), count(&answers, "u2"));
    eprintln!("udp weights 1:1 over 100 sessions: u1={n1} u2={n2}");
    assert_eq!(n1 + n2, 100);
    assert!((35..=65).contains(&n1), "u1 should get ~50 of 100: u1={n1} u2={n2}");
}

#[test]
fn l4_endpoint_change_reloads_gracefully_under_http_load() {
    let (t1, t2) = (tcp_echo("t1"), tcp_echo("t2"));
    let web = Backend::start("web");
    let (hport, tport) = (free_port(), free_port());
    let http_ft = format!(
        "apiVersion: crd.alauda.io/v1\nkind: Frontend\nmetadata:\n  name: ft-http\n  namespace: default\n  labels: {{alb2.cpaas.io/name: e2e}}\nspec:\n  port: {hport}\n  protocol: http\n  serviceGroup:\n    services:\n      - {{name: web, namespace: default, port: 80}}\n"
    );
    let gw = Standalone::start(&[
        ("web.yaml", service("web", "TCP", &[web.port])),
        ("l4svc.yaml", service("l4", "TCP", &[t1])),
        ("fts.yaml", [http_ft, frontend("ft-tcp", tport, "tcp", &[("l4", 100)])].join("---\n")),
    ]);
    let master = gw.pids()[0];
    assert!(tcp_call(tport, "x").unwrap().starts_with("t1:"));

    // A TCP connection opened before the reloads, kept open across them: it finishes on its old worker.
    let mut held = TcpStream::connect(("127.0.0.1", tport)).expect("connect");
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut held_reader = BufReader::new(held.try_clone().unwrap());
    let mut echo_held = |msg: &str| -> String {
        held.write_all(format!("{msg}\n").as_bytes()).expect("write on held connection");
        let mut line = String::new();
        held_reader.read_line(&mut line).expect("read on held connection");
        line.trim_end().to_string()
    };
    assert_eq!(echo_held("before"), "t1:before");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, reconnects) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, reconnects) = (stop.clone(), ok.clone(), failed.clone(), reconnects.clone());
        load.push(std::thread::spawn(move || {
            let mut conn = Conn::open(hport).expect("connect");
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut r = conn.send("GET", "/", &[], b"");
                if let Err(e) = &r {
                    // A reload closes idle keep-alive connections of the old workers; a request racing that close
                    // sees EOF (or a reset: the request was unread) before any byte of a response and is retried on
                    // a new connection, as HTTP clients do for idempotent requests (RFC 9110 §9.2.2). A retry that
                    // fails, or anything else, counts as a failure.
                    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
                    if matches!(e.kind(), UnexpectedEof | ConnectionReset | BrokenPipe) {
                        reconnects.fetch_add(1, Ordering::Relaxed);
                        conn = Conn::open(hport).expect("reconnect");
                        r = conn.send("GET", "/", &[], b"");
                    }
                }
                match r {
                    Ok(r) if r.status == 200 && r.backend() == "web" => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("failed: {r:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("failed: {e}");
                        conn = Conn::open(hport).expect("reconnect");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    for n in 0..6 {
        let (to, name) = if n % 2 == 0 { (t2, "t2") } else { (t1, "t1") };
        let skip = gw.proc.log_len();
        gw.write("l4svc.yaml", &service("l4", "TCP", &[to]));
        gw.proc.wait_log_after(skip, "nginx reloaded: stream backends changed", Duration::from_secs(10));
        let t = Instant::now();
        loop {
            // new connections reach the new endpoint once the new workers accept
            if tcp_call(tport, "y").map(|a| a.starts_with(&format!("{name}:"))).unwrap_or(false) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "tcp frontend not switched to {name}");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let (ok, failed, reconnects) =
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), reconnects.load(Ordering::Relaxed));
    eprintln!("6 L4 reloads under HTTP load: {ok} requests ok, {failed} failed, {reconnects} keep-alive reconnects");
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(failed, 0);
    assert_eq!(gw.pids()[0], master, "same nginx master: HUP, not a restart");
    assert_eq!(echo_held("after"), "t1:after", "a connection open across reloads keeps its backend");
    assert!(
        !gw.proc.logs().iter().any(|l| l.contains("nginx reloaded: listeners changed")),
        "endpoint changes are not listener changes"
    );
}

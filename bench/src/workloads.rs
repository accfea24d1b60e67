//! The named workloads (docs/performance.md, "Workloads"): each one runs against one started
//! server and returns table rows; the domain-scaling ones also return curve points for the SVG.

use std::path::Path;
use std::time::{Duration, Instant};

use xenstore_client::client::{Client, ClientError, RingTransport, SocketTransport, Transport};
use xenstore_client::message::payload_strings;
use xenstore_engine::wire::{MessageType, join_strings};
use xenstore_engine::{DomainId, StoreError};

use crate::servers::{RunningServer, ServerKind};
use crate::stats::{Samples, Summary};

/// How big the workloads are.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// How long each timed phase of the throughput workloads runs.
    pub phase: Duration,
    /// How often each throughput phase is repeated; the run with the median throughput is
    /// kept (docs/performance.md, "Metrics"), because the machine may be shared.
    pub repeats: usize,
    /// Iterations of each W1 test.
    pub iterations: usize,
    pub hot_keys: usize,
    pub directory_sizes: &'static [usize],
    pub conflict_clients: &'static [usize],
    pub watchers: &'static [usize],
    pub watch_writes: usize,
    /// W9 checkpoints: live introduced domains at which latency and memory are measured.
    pub domain_checkpoints: &'static [usize],
    pub boot_storm_domains: usize,
    pub lifecycle_domains: usize,
    pub memory_nodes: usize,
    /// Latency samples per W9 checkpoint.
    pub checkpoint_samples: usize,
}

impl Scale {
    pub fn quick() -> Scale {
        Scale {
            phase: Duration::from_millis(200),
            repeats: 3,
            iterations: 2000,
            hot_keys: 1000,
            directory_sizes: &[10, 100, 1000],
            conflict_clients: &[8],
            watchers: &[1, 10, 100],
            watch_writes: 200,
            domain_checkpoints: &[0, 250, 500, 1000],
            boot_storm_domains: 300,
            lifecycle_domains: 200,
            memory_nodes: 20_000,
            checkpoint_samples: 1000,
        }
    }

    pub fn full() -> Scale {
        Scale {
            phase: Duration::from_millis(1000),
            repeats: 5,
            iterations: 10_000,
            hot_keys: 10_000,
            directory_sizes: &[10, 100, 1000, 5000],
            conflict_clients: &[2, 4, 8],
            watchers: &[1, 10, 100],
            watch_writes: 1000,
            domain_checkpoints: &[0, 100, 250, 500, 750, 1000],
            boot_storm_domains: 1000,
            lifecycle_domains: 1000,
            memory_nodes: 100_000,
            checkpoint_samples: 5000,
        }
    }
}

/// One line of the result table.
#[derive(Clone, Debug)]
pub struct Row {
    pub workload: &'static str,
    pub variant: String,
    pub server: ServerKind,
    pub summary: Summary,
    /// The server's `VmHWM` after the workload, KiB.
    pub peak_memory_kibibytes: u64,
    /// A workload-specific figure (bytes per node, ms per domain, ...).
    pub figure: Option<(&'static str, f64)>,
    pub note: String,
    /// An optional request this server answered with an error (W13's `XS_CONTROL memreport`,
    /// which C xenstored only knows when built with talloc reports): `(request, error)`. Not
    /// a failure in itself; ours failing where a peer answered is (see `verdict`).
    pub refused: Option<(&'static str, String)>,
}

/// One point of the domain-scaling curves.
#[derive(Clone, Debug)]
pub struct ScalingPoint {
    pub server: ServerKind,
    pub curve: &'static str,
    pub domains: usize,
    pub value: f64,
}

pub type WorkloadResult = Result<(Vec<Row>, Vec<ScalingPoint>), ClientError>;

fn row(
    workload: &'static str,
    variant: impl Into<String>,
    server: &RunningServer,
    samples: &Samples,
) -> Row {
    Row {
        workload,
        variant: variant.into(),
        server: server.kind,
        summary: samples.summary(),
        peak_memory_kibibytes: server.memory_kibibytes().1,
        figure: None,
        note: String::new(),
        refused: None,
    }
}

/// A tiny deterministic generator: uniform key choice needs no statistical quality.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

fn connect_socket(socket: &Path) -> Result<Client<SocketTransport>, ClientError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Client::connect(socket) {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() > deadline => return Err(error),
            // The peers listen with backlog 1: concurrent connects are refused; retry.
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Runs `measure` `repeats` times and keeps the run with the median throughput, with the
/// server CPU it used.
fn median_run(
    server: &RunningServer,
    repeats: usize,
    mut measure: impl FnMut() -> Result<Samples, ClientError>,
) -> Result<Samples, ClientError> {
    let mut runs = Vec::new();
    for _ in 0..repeats.max(1) {
        let cpu_before = server.cpu_nanoseconds();
        let mut samples = measure()?;
        samples.server_cpu_nanoseconds = Some(server.cpu_nanoseconds().saturating_sub(cpu_before));
        runs.push(samples);
    }
    runs.sort_by(|left, right| {
        left.summary()
            .operations_per_second
            .total_cmp(&right.summary().operations_per_second)
    });
    let middle = runs.len() / 2;
    Ok(runs.swap_remove(middle))
}

/// Connects `clients` socket clients and runs them ([`run_clients_once`]) `scale.repeats`
/// times for `scale.phase` each; keeps the median run.
fn run_socket_clients<F>(
    server: &RunningServer,
    clients: usize,
    scale: &Scale,
    operation: F,
) -> Result<Samples, ClientError>
where
    F: Fn(
            usize,
            &mut Client<SocketTransport>,
            &mut XorShift,
            &mut Samples,
        ) -> Result<(), ClientError>
        + Sync,
{
    median_run(server, scale.repeats, || {
        // Connect everyone first, so connection set-up is not timed.
        let mut connections = (0..clients)
            .map(|_| connect_socket(&server.socket))
            .collect::<Result<Vec<_>, _>>()?;
        run_clients_once(&mut connections, scale.phase, &operation)
    })
}

/// Runs `clients` concurrently for `phase`, each calling `operation` in a loop with its own
/// generator; `operation` records its own samples (so transactions can count retries).
fn run_clients_once<T, F>(
    clients: &mut [Client<T>],
    phase: Duration,
    operation: F,
) -> Result<Samples, ClientError>
where
    T: Transport + Send,
    F: Fn(usize, &mut Client<T>, &mut XorShift, &mut Samples) -> Result<(), ClientError> + Sync,
{
    let results: Vec<Result<Samples, ClientError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(index, client)| {
                let operation = &operation;
                scope.spawn(move || {
                    let mut random = XorShift(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1));
                    let mut samples = Samples::default();
                    let start = Instant::now();
                    while start.elapsed() < phase {
                        operation(index, client, &mut random, &mut samples)?;
                    }
                    samples.wall_nanoseconds = start.elapsed().as_nanos() as u64;
                    Ok(samples)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("client thread panicked"))
            .collect()
    });
    let parts = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Samples::merge(parts))
}

/// W0: the transport floor, a small READ-sized message echoed by the floor server.
pub fn w0_floor(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut samples = run_socket_clients(server, 1, scale, |_, client, _, samples| {
        let payload = join_strings(&["/bench/w3/key-00001"]);
        samples.time(|| client.request(MessageType::Read, 0, &payload))?;
        Ok(())
    })?;
    // The echo thread of a closed connection has exited, and its CPU time left the
    // per-thread counters with it: no CPU figure rather than a wrong one.
    samples.server_cpu_nanoseconds = None;
    Ok((
        vec![row("W0", "echo small, 1 client", server, &samples)],
        Vec::new(),
    ))
}

/// One call on a socket client.
type SocketCall<'a> = dyn FnMut(&mut Client<SocketTransport>) -> Result<(), ClientError> + 'a;

/// W1: the tests of Xen's `test-xenstore`, each timed per iteration on one connection.
pub fn w1_test_xenstore(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut client = server.connect()?;
    let base = "/bench/w1";
    let large_value = vec![b'x'; 2000];
    client.write(&format!("{base}/read1"), b"a")?;
    client.write(&format!("{base}/read2000"), &large_value)?;
    for child in 0..10 {
        client.write(&format!("{base}/dir/child{child}"), b"")?;
    }
    // Each test: its name, what it does untimed before each timed call, and that call.
    let tests: [(&str, Option<&mut SocketCall<'_>>, &mut SocketCall<'_>); 8] = [
        ("read 1 B", None, &mut |client| {
            client.read(&format!("{base}/read1")).map(drop)
        }),
        ("read 2000 B", None, &mut |client| {
            client.read(&format!("{base}/read2000")).map(drop)
        }),
        ("write 1 B", None, &mut |client| {
            client.write(&format!("{base}/write1"), b"b")
        }),
        ("write 2000 B", None, &mut |client| {
            client.write(&format!("{base}/write2000"), &large_value)
        }),
        ("dir 10", None, &mut |client| {
            client.directory(&format!("{base}/dir")).map(drop)
        }),
        (
            "rm node",
            Some(&mut |client| client.write(&format!("{base}/removed"), b"r")),
            &mut |client| client.rm(&format!("{base}/removed")),
        ),
        ("ta empty", None, &mut |client| {
            let transaction = client.transaction_start()?;
            client.transaction_end(transaction, true)
        }),
        ("ta rmw (4 req)", None, &mut |client| {
            let transaction = client.transaction_start()?;
            let value = client.read_in(transaction, &format!("{base}/read1"))?;
            client.write_in(transaction, &format!("{base}/rmw"), &value)?;
            client.transaction_end(transaction, true)
        }),
    ];
    let mut rows = Vec::new();
    for (name, mut before, call) in tests {
        let mut samples = Samples::default();
        let cpu_before = server.cpu_nanoseconds();
        let start = Instant::now();
        for _ in 0..scale.iterations {
            if let Some(before) = before.as_mut() {
                before(&mut client)?;
            }
            samples.time(|| call(&mut client))?;
        }
        samples.wall_nanoseconds = start.elapsed().as_nanos() as u64;
        samples.server_cpu_nanoseconds = Some(server.cpu_nanoseconds().saturating_sub(cpu_before));
        rows.push(row("W1", name, server, &samples));
    }
    Ok((rows, Vec::new()))
}

/// W3: uniform random reads over pre-populated keys, 1..8 socket clients, plus guests on rings.
pub fn w3_read_hot(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut client = server.connect()?;
    for key in 0..scale.hot_keys {
        client.write(
            &format!("/bench/w3/key-{key:05}"),
            b"0123456789abcdef0123456789abcdef",
        )?;
    }
    let mut rows = Vec::new();
    for clients in [1usize, 2, 4, 8] {
        let keys = scale.hot_keys;
        let samples = run_socket_clients(server, clients, scale, |_, client, random, samples| {
            let path = format!("/bench/w3/key-{:05}", random.below(keys));
            samples.time(|| client.read(&path))?;
            Ok(())
        })?;
        rows.push(row(
            "W3",
            format!("read {clients} socket clients"),
            server,
            &samples,
        ));
    }
    // The ring path: guests read their own keys through simulated rings.
    for (guests, first_domid) in [(1usize, 1u16), (4, 11)] {
        let mut guest_clients = Vec::new();
        // Fresh domids per phase: re-introducing a live domain with the same frame is a no-op
        // in C xenstored, which would keep serving the old ring file.
        for domid in first_domid..first_domid + guests as u16 {
            let guest = introduce_guest(&mut client, &server.run_directory, domid)?;
            // dom0 fills the guest's keys: guest writes are rate-limited in some servers (W5
            // measures that), and set-up is not what W3 times.
            for key in 0..100 {
                client.write(
                    &format!("/local/domain/{domid}/data/key-{key:03}"),
                    b"0123456789abcdef",
                )?;
            }
            guest_clients.push(guest);
        }
        let samples = median_run(server, scale.repeats, || {
            run_clients_once(
                &mut guest_clients,
                scale.phase,
                |_, guest, random, samples| {
                    let path = format!("data/key-{:03}", random.below(100));
                    samples.time(|| guest.read(&path))?;
                    Ok(())
                },
            )
        })?;
        rows.push(row(
            "W3",
            format!("read {guests} ring guests"),
            server,
            &samples,
        ));
    }
    Ok((rows, Vec::new()))
}

/// Creates guest `domid`'s files and home directory the way a toolstack does, then introduces it.
fn introduce_guest(
    dom0: &mut Client<SocketTransport>,
    run_directory: &Path,
    domid: u16,
) -> Result<Client<RingTransport>, ClientError> {
    let home = format!("/local/domain/{domid}");
    dom0.mkdir(&home)?;
    dom0.set_perms(&home, &[&format!("n{domid}")])?;
    Client::create_and_introduce(
        dom0,
        run_directory,
        DomainId(domid),
        1000 + u32::from(domid),
    )
}

/// W5: 32-byte writes over 1000 keys from 1 and 8 socket clients.
pub fn w5_write_burst(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut rows = Vec::new();
    for clients in [1usize, 8] {
        let samples = run_socket_clients(server, clients, scale, |_, client, random, samples| {
            let path = format!("/bench/w5/key-{:04}", random.below(1000));
            samples.time(|| client.write(&path, b"0123456789abcdef0123456789abcdef"))?;
            Ok(())
        })?;
        rows.push(row(
            "W5",
            format!("write 32 B, {clients} clients"),
            server,
            &samples,
        ));
    }
    // A guest writing through its ring with no transaction open anywhere: C xenstored applies
    // its write-rate limit (200 writes/s) only while some transaction is open.
    let mut dom0 = server.connect()?;
    let mut guest = introduce_guest(&mut dom0, &server.run_directory, 1)?;
    let mut samples = Samples::default();
    let start = Instant::now();
    while start.elapsed() < scale.phase {
        let path = format!("data/key-{:03}", samples.operations % 100);
        samples.time(|| guest.write(&path, b"0123456789abcdef0123456789abcdef"))?;
    }
    samples.wall_nanoseconds = start.elapsed().as_nanos() as u64;
    let mut result = row("W5", "write 32 B, 1 ring guest", server, &samples);
    result.note = "no transaction open".to_string();
    rows.push(result);
    Ok((rows, Vec::new()))
}

/// Lists a directory, with `XS_DIRECTORY_PART` when the listing exceeds one payload.
fn list_directory(
    client: &mut Client<SocketTransport>,
    path: &str,
) -> Result<(usize, bool), ClientError> {
    match client.directory(path) {
        Ok(children) => return Ok((children.len(), false)),
        Err(ClientError::Store(name)) if name == StoreError::TooBig.wire_name() => {}
        Err(error) => return Err(error),
    }
    let mut offset = 0usize;
    let mut children = 0usize;
    loop {
        let payload = client.call(
            MessageType::DirectoryPart,
            0,
            &join_strings(&[path, &offset.to_string()]),
        )?;
        // Reply: generation NUL, then children NUL-terminated; the last part ends in an
        // extra NUL (an empty name).
        let generation_end = payload
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(payload.len());
        let data = payload.get(generation_end + 1..).unwrap_or_default();
        let last = data.is_empty() || data.ends_with(b"\0\0") || data == b"\0";
        let names = if last {
            data.strip_suffix(b"\0").unwrap_or(data)
        } else {
            data
        };
        children += payload_strings(names)
            .iter()
            .filter(|name| !name.is_empty())
            .count();
        offset += names.len();
        if last {
            return Ok((children, true));
        }
    }
}

/// W6: listing directories of 10..5000 children.
pub fn w6_directories(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut client = server.connect()?;
    let mut rows = Vec::new();
    for &size in scale.directory_sizes {
        let path = format!("/bench/w6/dir{size}");
        for child in 0..size {
            client.write(&format!("{path}/child-{child:05}"), b"")?;
        }
        let iterations = (scale.iterations * 10 / size.max(10)).clamp(20, scale.iterations);
        let mut samples = Samples::default();
        let mut used_parts = false;
        let mut listed = 0;
        let start = Instant::now();
        for _ in 0..iterations {
            let (count, parts) = samples.time(|| list_directory(&mut client, &path))?;
            used_parts |= parts;
            listed = count;
        }
        samples.wall_nanoseconds = start.elapsed().as_nanos() as u64;
        if listed != size {
            return Err(ClientError::Protocol(format!(
                "listing {path} gave {listed} children, not {size}"
            )));
        }
        let mut result = row("W6", format!("dir {size} children"), server, &samples);
        result.note = format!(
            "{listed} listed{}",
            if used_parts {
                ", via DIRECTORY_PART"
            } else {
                ""
            }
        );
        rows.push(result);
    }
    Ok((rows, Vec::new()))
}

/// One read-increment-write transaction on `path`, retried on `EAGAIN`; records the whole
/// commit's latency and the retries.
fn increment_in_transaction(
    client: &mut Client<SocketTransport>,
    path: &str,
    samples: &mut Samples,
) -> Result<(), ClientError> {
    let start = Instant::now();
    loop {
        let transaction = client.transaction_start()?;
        let value = client.read_in(transaction, path)?;
        let number: u64 = String::from_utf8_lossy(&value).parse().unwrap_or(0);
        client.write_in(transaction, path, (number + 1).to_string().as_bytes())?;
        match client.transaction_end(transaction, true) {
            Ok(()) => break,
            Err(ClientError::Store(name)) if name == StoreError::Again.wire_name() => {
                samples.retries += 1
            }
            Err(error) => return Err(error),
        }
    }
    samples.record(start.elapsed());
    Ok(())
}

/// W7: conflicting transactions on one counter, and disjoint ones (one counter per client).
pub fn w7_transactions(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut client = server.connect()?;
    client.write("/bench/w7/counter", b"0")?;
    for index in 0..8 {
        client.write(&format!("/bench/w7/disjoint/{index}/counter"), b"0")?;
    }
    let mut rows = Vec::new();
    for &clients in scale.conflict_clients {
        let samples = run_socket_clients(server, clients, scale, |_, client, _, samples| {
            increment_in_transaction(client, "/bench/w7/counter", samples)
        })?;
        rows.push(row(
            "W7",
            format!("conflicting, {clients} clients"),
            server,
            &samples,
        ));
    }
    let samples = run_socket_clients(server, 8, scale, |index, client, _, samples| {
        increment_in_transaction(
            client,
            &format!("/bench/w7/disjoint/{index}/counter"),
            samples,
        )
    })?;
    rows.push(row("W7", "disjoint, 8 clients", server, &samples));
    Ok((rows, Vec::new()))
}

/// How long W8 waits for each watch event before it fails the workload.
const WATCH_EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A watch event that did not come: the workload fails (a server that drops events is broken).
fn missing_event(which: &str) -> ClientError {
    ClientError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "no watch event within {} s: {which}",
            WATCH_EVENT_TIMEOUT.as_secs()
        ),
    ))
}

/// W8: K connections watch one node; each write's latency lasts until the last watcher has
/// its event. Throughput counts delivered events.
pub fn w8_watch_fanout(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut writer = server.connect()?;
    writer.write("/bench/w8/node", b"0")?;
    let mut rows = Vec::new();
    for &watcher_count in scale.watchers {
        let mut watchers = Vec::new();
        for index in 0..watcher_count {
            let mut watcher = server.connect()?;
            watcher.watch("/bench/w8/node", &format!("token{index}"))?;
            // The initial event every new watch fires.
            if watcher.next_event(WATCH_EVENT_TIMEOUT)?.is_none() {
                return Err(missing_event(&format!(
                    "the initial event of watcher {index} of {watcher_count}"
                )));
            }
            watchers.push(watcher);
        }
        let writes = (scale.watch_writes * 10 / watcher_count.max(10)).max(20);
        let mut samples = Samples::default();
        let cpu_before = server.cpu_nanoseconds();
        let start = Instant::now();
        for write in 0..writes {
            let begin = Instant::now();
            writer.write("/bench/w8/node", write.to_string().as_bytes())?;
            for (index, watcher) in watchers.iter_mut().enumerate() {
                if watcher.next_event(WATCH_EVENT_TIMEOUT)?.is_none() {
                    return Err(missing_event(&format!(
                        "the event of write {write} for watcher {index} of {watcher_count}"
                    )));
                }
            }
            samples.record(begin.elapsed());
        }
        samples.wall_nanoseconds = start.elapsed().as_nanos() as u64;
        samples.operations = (writes * watcher_count) as u64;
        samples.server_cpu_nanoseconds = Some(server.cpu_nanoseconds().saturating_sub(cpu_before));
        let mut result = row(
            "W8",
            format!("fan-out to {watcher_count} watchers"),
            server,
            &samples,
        );
        result.note = "ops = events delivered; latency = write to last event".to_string();
        rows.push(result);
    }
    Ok((rows, Vec::new()))
}

/// Times `count` socket reads and writes and ring reads at one W9 checkpoint. Two guests read
/// through their rings: the first domain introduced and the newest one, because a server that
/// walks its domains in order answers the first one early in every pass.
fn checkpoint_latencies(
    dom0: &mut Client<SocketTransport>,
    first_guest: &mut Client<RingTransport>,
    newest_guest: &mut Client<RingTransport>,
    count: usize,
) -> Result<[Samples; 4], ClientError> {
    let mut samples: [Samples; 4] = Default::default();
    for index in 0..count {
        samples[0].time(|| dom0.read("/local/domain/1/name"))?;
        samples[1].time(|| dom0.write("/bench/w9/value", index.to_string().as_bytes()))?;
        samples[2].time(|| first_guest.read("name"))?;
        samples[3].time(|| newest_guest.read("name"))?;
    }
    Ok(samples)
}

/// W9 + W13 per domain: latency and memory against 0..1000 live introduced domains (each one
/// a toolstack-style home directory plus `XS_INTRODUCE` of a simulated ring).
pub fn w9_domain_scaling(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut dom0 = server.connect()?;
    dom0.write("/bench/w9/value", b"0")?;
    let mut first_guest = introduce_guest(&mut dom0, &server.run_directory, 1)?;
    dom0.write("/local/domain/1/name", b"guest-1")?;
    // Warm up (page faults, allocator) before the 0-domain baseline.
    let mut newest_guest = Client::attach(&server.run_directory, DomainId(1))?;
    checkpoint_latencies(&mut dom0, &mut first_guest, &mut newest_guest, 200)?;
    let (baseline_rss_kibibytes, _) = server.memory_kibibytes();
    let mut live_domains = 1usize; // domain 1 is the first measuring guest
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for &checkpoint in scale.domain_checkpoints {
        if live_domains < checkpoint.max(1) {
            while live_domains < checkpoint.max(1) {
                live_domains += 1;
                let domid = live_domains as u16;
                let guest = introduce_guest(&mut dom0, &server.run_directory, domid)?;
                if live_domains == checkpoint {
                    dom0.write(&format!("/local/domain/{domid}/name"), b"newest")?;
                    newest_guest = guest;
                }
            }
        }
        let samples = checkpoint_latencies(
            &mut dom0,
            &mut first_guest,
            &mut newest_guest,
            scale.checkpoint_samples,
        )?;
        let (rss_kibibytes, _) = server.memory_kibibytes();
        let names = [
            "socket read",
            "socket write",
            "ring read, first domain",
            "ring read, newest domain",
        ];
        for (name, samples) in names.iter().zip(&samples) {
            let mut result = row(
                "W9",
                format!("{name} @ {checkpoint} domains"),
                server,
                samples,
            );
            result.summary.operations_per_second = f64::NAN;
            rows.push(result);
            points.push(ScalingPoint {
                server: server.kind,
                curve: name,
                domains: checkpoint,
                value: samples.summary().p50_microseconds,
            });
        }
        points.push(ScalingPoint {
            server: server.kind,
            curve: "rss MiB",
            domains: checkpoint,
            value: rss_kibibytes as f64 / 1024.0,
        });
    }
    let (final_rss_kibibytes, _) = server.memory_kibibytes();
    // The store of a busy host: every live domain gets a toolstack's nodes plus data nodes,
    // about 100 nodes each (docs/performance.md, "Goals": 1000 domains x 100 nodes in 16 MiB).
    let mut nodes_per_domain = 0;
    for domid in 1..=live_domains {
        let mut writes = toolstack_writes(domid);
        for item in 0..80 {
            writes.push((
                format!("/local/domain/{domid}/data/item-{item:02}"),
                format!("value-{item}"),
            ));
        }
        // Nodes below the home directory, intermediate directories included.
        let home = format!("/local/domain/{domid}");
        let created: std::collections::BTreeSet<String> = writes
            .iter()
            .flat_map(|(path, _)| {
                path.match_indices('/')
                    .map(|(index, _)| path[..index].to_string())
                    .chain([path.clone()])
                    .filter(|prefix| prefix.len() > home.len() && prefix.starts_with(&home))
                    .collect::<Vec<_>>()
            })
            .collect();
        nodes_per_domain = created.len() + 1;
        for (path, value) in writes {
            dom0.write(&path, value.as_bytes())?;
        }
    }
    let (store_rss_kibibytes, peak_kibibytes) = server.memory_kibibytes();
    // Ring pages are mapped, not allocated, in a stub domain: leave them out.
    let store_mebibytes = ((store_rss_kibibytes as f64 - baseline_rss_kibibytes as f64) * 1024.0
        - 4096.0 * live_domains as f64)
        / (1024.0 * 1024.0);
    let added_domains = live_domains.saturating_sub(1).max(1);
    // The ring page is a MAP_SHARED file page the server touched, so it is in its RSS.
    let bytes_per_domain = (final_rss_kibibytes as f64 - baseline_rss_kibibytes as f64) * 1024.0
        / added_domains as f64
        - 4096.0;
    // A W13 row with a figure and no timed operations.
    let figure_row = |variant: String, figure: (&'static str, f64), note: String| Row {
        workload: "W13",
        variant,
        server: server.kind,
        summary: Summary::empty(),
        peak_memory_kibibytes: peak_kibibytes,
        figure: Some(figure),
        note,
        refused: None,
    };
    rows.push(figure_row(
        format!("memory per domain ({added_domains} introduced)"),
        ("B/domain beyond ring page", bytes_per_domain),
        "RSS delta incl. 1 home-directory node per domain".to_string(),
    ));
    rows.push(figure_row(
        format!("store of {live_domains} domains x 100 nodes"),
        ("MiB beyond ring pages", store_mebibytes),
        format!(
            "RSS delta over the 0-domain baseline; {nodes_per_domain} nodes/domain \
             (toolstack nodes + 80 data nodes)"
        ),
    ));
    Ok((rows, points))
}

/// The nodes a libxl-like toolstack writes for a PV guest with one vif and one vbd (20 writes).
fn toolstack_writes(domid: usize) -> Vec<(String, String)> {
    let home = format!("/local/domain/{domid}");
    let mut writes = vec![
        (format!("{home}/name"), format!("guest-{domid}")),
        (format!("{home}/domid"), domid.to_string()),
        (
            format!("{home}/vm"),
            format!("/vm/00000000-0000-0000-0000-{domid:012}"),
        ),
        (format!("{home}/memory/static-max"), "524288".to_string()),
        (format!("{home}/memory/target"), "524288".to_string()),
        (format!("{home}/cpu/0/availability"), "online".to_string()),
        (format!("{home}/control/shutdown"), String::new()),
        (format!("{home}/control/feature-balloon"), "1".to_string()),
        (format!("{home}/data"), String::new()),
        (format!("{home}/console/ring-ref"), "2".to_string()),
    ];
    for (device, index) in [("vif", "0"), ("vbd", "51712")] {
        let front = format!("{home}/device/{device}/{index}");
        writes.push((
            format!("{front}/backend"),
            format!("/local/domain/0/backend/{device}/{domid}/{index}"),
        ));
        writes.push((format!("{front}/backend-id"), "0".to_string()));
        writes.push((format!("{front}/state"), "1".to_string()));
        writes.push((format!("{front}/handle"), index.to_string()));
        writes.push((
            format!("{front}/mac-or-type"),
            "00:16:3e:00:00:01".to_string(),
        ));
    }
    writes
}

/// Where a domain boot's time went.
#[derive(Default)]
struct BootTimes {
    /// mkdir, setperms and the 20 writes.
    requests: Duration,
    introduce: Duration,
}

/// The guest side of a domain: its ring file and FIFOs. Made before the toolstack's timed part,
/// as a real domain's memory exists before it is introduced.
fn create_guest_files(run_directory: &Path, domid: usize) -> Result<(), ClientError> {
    xenstore_client::simulation::DomainFiles::new(run_directory, DomainId(domid as u16))
        .create(1000 + domid as u32)?;
    Ok(())
}

/// Boots one domain as a toolstack does (mkdir, setperms, 20 writes, introduce); the guest's
/// files must exist.
fn boot_domain(
    dom0: &mut Client<SocketTransport>,
    domid: usize,
    times: &mut BootTimes,
) -> Result<(), ClientError> {
    let start = Instant::now();
    let home = format!("/local/domain/{domid}");
    dom0.mkdir(&home)?;
    dom0.set_perms(&home, &["n0", &format!("r{domid}")])?;
    for (path, value) in toolstack_writes(domid) {
        dom0.write(&path, value.as_bytes())?;
    }
    let introduce_start = Instant::now();
    times.requests += introduce_start - start;
    dom0.introduce(DomainId(domid as u16), 0, 1000 + domid as u32)?;
    times.introduce += introduce_start.elapsed();
    Ok(())
}

/// W10: boot storm keeping every domain: cost per domain against the live count.
pub fn w10_boot_storm(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut dom0 = server.connect()?;
    let batch = (scale.boot_storm_domains / 5).max(1);
    let mut all = Samples::default();
    let mut points = Vec::new();
    let cpu_before = server.cpu_nanoseconds();
    let start = Instant::now();
    let mut domid = 0;
    let mut times = BootTimes::default();
    while domid < scale.boot_storm_domains {
        for next in domid + 1..=domid + batch {
            create_guest_files(&server.run_directory, next)?;
        }
        let batch_start = Instant::now();
        for _ in 0..batch {
            domid += 1;
            all.time(|| boot_domain(&mut dom0, domid, &mut times))?;
        }
        points.push(ScalingPoint {
            server: server.kind,
            curve: "boot ms/domain",
            domains: domid,
            value: batch_start.elapsed().as_secs_f64() * 1000.0 / batch as f64,
        });
    }
    all.wall_nanoseconds = start.elapsed().as_nanos() as u64;
    all.server_cpu_nanoseconds = Some(server.cpu_nanoseconds().saturating_sub(cpu_before));
    let mut result = row("W10", format!("boot storm, keep {domid}"), server, &all);
    let first = points.first().map_or(f64::NAN, |point| point.value);
    let last = points.last().map_or(f64::NAN, |point| point.value);
    result.figure = Some(("last/first batch cost", last / first));
    let per_domain_milliseconds =
        |total: Duration| total.as_secs_f64() * 1000.0 / domid.max(1) as f64;
    result.note = format!(
        "ms/domain first batch {first:.2}, last {last:.2}; mean split: 22 requests {:.2}, \
         XS_INTRODUCE {:.2}; ops = domains",
        per_domain_milliseconds(times.requests),
        per_domain_milliseconds(times.introduce)
    );
    Ok((vec![result], points))
}

/// W11: whole lifecycles (boot, release, rm), sequential, one toolstack client.
pub fn w11_lifecycle(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut dom0 = server.connect()?;
    // Reuse a small set of domids, as a host that keeps creating and destroying guests. Their
    // rings are never driven, so one set of guest files serves every incarnation.
    const DOMID_POOL: usize = 50;
    for domid in 2000..2000 + DOMID_POOL {
        create_guest_files(&server.run_directory, domid)?;
    }
    let mut samples = Samples::default();
    let mut times = BootTimes::default();
    let cpu_before = server.cpu_nanoseconds();
    let start = Instant::now();
    for index in 0..scale.lifecycle_domains {
        let domid = 2000 + index % DOMID_POOL;
        samples.time(|| -> Result<(), ClientError> {
            boot_domain(&mut dom0, domid, &mut times)?;
            dom0.release(DomainId(domid as u16))?;
            dom0.rm(&format!("/local/domain/{domid}"))
        })?;
    }
    samples.wall_nanoseconds = start.elapsed().as_nanos() as u64;
    samples.server_cpu_nanoseconds = Some(server.cpu_nanoseconds().saturating_sub(cpu_before));
    let mut result = row(
        "W11",
        format!("lifecycle x{}, 1 client", scale.lifecycle_domains),
        server,
        &samples,
    );
    result.note = "ops = lifecycles (25 requests each)".to_string();
    Ok((vec![result], Vec::new()))
}

/// W13: memory per node (RSS delta over N written nodes minus their key and value bytes),
/// and the `memreport` control command's answer.
pub fn w13_memory(server: &RunningServer, scale: &Scale) -> WorkloadResult {
    let mut client = server.connect()?;
    client.write("/bench/w13/warm", b"x")?;
    let (before_kibibytes, _) = server.memory_kibibytes();
    let mut payload_bytes = 0usize;
    let mut samples = Samples::default();
    let cpu_before = server.cpu_nanoseconds();
    let start = Instant::now();
    for index in 0..scale.memory_nodes {
        let path = format!("/bench/w13/d{:04}/node-{index:07}", index / 100);
        let value = format!("value-{index:014}");
        payload_bytes += path.len() + value.len();
        samples.time(|| client.write(&path, value.as_bytes()))?;
    }
    samples.wall_nanoseconds = start.elapsed().as_nanos() as u64;
    samples.server_cpu_nanoseconds = Some(server.cpu_nanoseconds().saturating_sub(cpu_before));
    let (after_kibibytes, peak_kibibytes) = server.memory_kibibytes();
    let nodes = scale.memory_nodes as f64;
    let bytes_per_node = ((after_kibibytes as f64 - before_kibibytes as f64) * 1024.0
        - payload_bytes as f64)
        / nodes;
    // An error reply is the server's answer (C xenstored knows memreport only when built
    // with talloc reports); a lost connection or a timeout fails the workload.
    let mut refused = None;
    let memreport = match client.call(MessageType::Control, 0, &join_strings(&["memreport"])) {
        Ok(reply) => {
            let text = String::from_utf8_lossy(&reply).replace(['\n', '\0'], " ");
            text.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(120)
                .collect()
        }
        Err(ClientError::Store(name)) => {
            refused = Some(("XS_CONTROL memreport", name.clone()));
            format!("memreport: {name}")
        }
        Err(error) => return Err(error),
    };
    let mut result = row(
        "W13",
        format!("memory per node ({} nodes)", scale.memory_nodes),
        server,
        &samples,
    );
    result.peak_memory_kibibytes = peak_kibibytes;
    result.refused = refused;
    result.figure = Some(("B/node beyond key+value", bytes_per_node));
    result.note = format!(
        "key+value avg {:.0} B; {memreport}",
        payload_bytes as f64 / nodes
    );
    Ok((vec![result], Vec::new()))
}

/// The workloads in run order, with the servers each applies to.
pub type WorkloadFunction = fn(&RunningServer, &Scale) -> WorkloadResult;

pub fn all() -> Vec<(&'static str, WorkloadFunction, bool)> {
    // (name, function, runs on the floor server instead of the stores)
    vec![
        ("W0", w0_floor as WorkloadFunction, true),
        ("W1", w1_test_xenstore, false),
        ("W3", w3_read_hot, false),
        ("W5", w5_write_burst, false),
        ("W6", w6_directories, false),
        ("W7", w7_transactions, false),
        ("W8", w8_watch_fanout, false),
        ("W9", w9_domain_scaling, false),
        ("W10", w10_boot_storm, false),
        ("W11", w11_lifecycle, false),
        ("W13", w13_memory, false),
    ]
}

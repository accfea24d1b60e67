//! `stub-heap`: how much of the stub domain's heap a host of 1000 domains x 100 nodes takes
//! (performance goal: "the stub domain serves 1000 domains x 100 nodes in 16 MiB", issue 6),
//! measured with the stub's own allocator (`stub-allocator`: size classes for small blocks over
//! `linked_list_allocator`'s first fit, see `src/runtime/heap.rs`) and the real engine, driven
//! through its rings the way `src/xenstore.rs` serves them. Prints a table, the verdict and
//! the stub domain's size this needs (`init-xenstore-domain --memory`: the kernel image, boot
//! data, the heap and the engine's guest reserve, see `domain_size.rs`); `--append-csv` adds
//! one row to the benchmark's `results.csv`.

#![deny(unsafe_code)]

// The measuring allocator is the one place with unsafe (docs/unsafe.md).
#[allow(unsafe_code)]
mod arena;
mod domain_size;
mod host;
#[cfg(test)]
mod small_heap;
mod workload;

use std::error::Error;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use arena::{HeapFigures, STUB_HEAP, WhenExhausted};
use domain_size::{DomainSize, ImageEnd};
use host::{HostError, SimulatedHost};
use xenstore_engine::DomainId;

const USAGE: &str = "\
usage: stub-heap [--domains N] [--nodes-per-domain N] [--order boot|phases] [--kernel IMAGE]
                 [--append-csv FILE]

Serves N guests (default 1000) with N nodes each (default 100: libxl's nodes plus the
guest's data nodes) through the real engine on the stub's allocator, and reports the heap
and the domain size it needs (init-xenstore-domain --memory).
--order boot (default): each domain is built, introduced, written and watched before the next,
as a host boots its guests one after another. --order phases: every domain's libxl nodes,
then every XS_INTRODUCE, then every guest's data, then every watch.
--kernel: the stub's ELF image, whose PT_LOAD segments give where the heap starts (default
$CARGO_TARGET_DIR or the workspace's target/, then x86_64-unknown-none/release/xenstore-stubdom:
`cargo kernel` builds it); when it cannot be read, the image is assumed to end at 2 MiB.";

/// The goal of docs/performance.md, "Goals" (issue 6).
const GOAL_BYTES: usize = 16 << 20;
const MEBIBYTE: f64 = 1024.0 * 1024.0;
/// The columns of `results.csv` (`report::csv` in xenstore-bench), for a file made here.
const CSV_HEADER: &str = "workload,variant,server,operations_per_second,p50_microseconds,\
p99_microseconds,max_microseconds,retries_per_commit,server_cpu_microseconds_per_operation,\
peak_memory_kibibytes,ratio_to_ours,figure_name,figure,note";
/// How many of the fullest class free lists the report names.
const LARGEST_CLASS_FREE_LISTS: usize = 6;
/// How often, in domains, the free list's length is sampled.
const HOLE_SAMPLE_DOMAINS: usize = 25;
/// The kernel image below the target directory (`cargo kernel`).
const KERNEL_IMAGE_IN_TARGET: &str = "x86_64-unknown-none/release/xenstore-stubdom";

/// In which order the domains' steps run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// Domain after domain, each through all its steps (a host booting its guests).
    Boot,
    /// Step after step, each for every domain.
    Phases,
}

impl Order {
    fn name(self) -> &'static str {
        match self {
            Order::Boot => "boot order",
            Order::Phases => "phase order",
        }
    }
}

struct Options {
    domains: usize,
    nodes_per_domain: usize,
    order: Order,
    kernel: PathBuf,
    append_csv: Option<PathBuf>,
}

/// The image `cargo kernel` builds: below `$CARGO_TARGET_DIR`, or the workspace's `target/`.
fn default_kernel_image() -> PathBuf {
    let manifest_directory = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_directory.parent().unwrap_or(manifest_directory);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    target.join(KERNEL_IMAGE_IN_TARGET)
}

fn parse_arguments() -> Result<Options, String> {
    let mut options = Options {
        domains: 1000,
        nodes_per_domain: 100,
        order: Order::Boot,
        kernel: default_kernel_image(),
        append_csv: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or_else(|| format!("{word} needs a value"));
        match word.as_str() {
            "--domains" => {
                options.domains = value()?
                    .parse()
                    .map_err(|error| format!("--domains: {error}"))?
            }
            "--nodes-per-domain" => {
                options.nodes_per_domain = value()?
                    .parse()
                    .map_err(|error| format!("--nodes-per-domain: {error}"))?
            }
            "--order" => {
                options.order = match value()?.as_str() {
                    "boot" => Order::Boot,
                    "phases" => Order::Phases,
                    other => return Err(format!("--order: boot or phases, not {other}")),
                }
            }
            "--kernel" => options.kernel = value()?.into(),
            "--append-csv" => options.append_csv = Some(value()?.into()),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    // Guest ids run from 2 up and must stay below DOMID_FIRST_RESERVED.
    if options.domains == 0 || options.domains > 30_000 {
        return Err("--domains must be 1..=30000".to_string());
    }
    Ok(options)
}

/// One step of a domain's life on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The hypervisor creates it; libxl writes its nodes (two transactions).
    LibxlNodes,
    /// `XS_INTRODUCE`: the stub maps its ring, the engine opens its connection.
    Introduce,
    /// The guest writes its data nodes through its ring.
    GuestData,
    /// The guest kernel's 5 watches and xenconsoled's watch in dom0.
    Watches,
}

const STEPS: [Step; 4] = [
    Step::LibxlNodes,
    Step::Introduce,
    Step::GuestData,
    Step::Watches,
];

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::LibxlNodes => "libxl nodes (2 transactions)",
            Step::Introduce => "XS_INTRODUCE (ring connected)",
            Step::GuestData => "guest's data nodes (own ring)",
            Step::Watches => "watches (5 guest + 1 dom0)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one kind of step added over all domains.
#[derive(Clone, Copy, Debug, Default)]
struct StepTotals {
    /// Arena bytes in use after minus before, summed over the domains.
    delta_bytes: i64,
    nodes: i64,
    /// Wall time (informative: it includes the allocator's work, e.g. first fit's walks of its
    /// free list for blocks beyond the size classes).
    seconds: f64,
}

/// Runs the steps and keeps their totals and the free list's longest sampled length.
struct Recorder {
    totals: [StepTotals; 4],
    most_holes: usize,
}

impl Recorder {
    fn run_step(
        &mut self,
        host: &mut SimulatedHost,
        step: Step,
        domid: u16,
        data_nodes: usize,
    ) -> Result<(), HostError> {
        let used_before = STUB_HEAP.used_bytes();
        let nodes_before = host.engine().node_count();
        let started = Instant::now();
        match step {
            Step::LibxlNodes => workload::create_domain_nodes(host, domid)?,
            Step::Introduce => workload::introduce(host, domid)?,
            Step::GuestData => {
                let data = workload::guest_data(domid, data_nodes);
                workload::write_guest_data(host, domid, &data)?
            }
            Step::Watches => workload::add_watches(host, domid)?,
        }
        let totals = &mut self.totals[step.index()];
        totals.seconds += started.elapsed().as_secs_f64();
        totals.delta_bytes += STUB_HEAP.used_bytes() as i64 - used_before as i64;
        totals.nodes += host.engine().node_count() as i64 - nodes_before as i64;
        Ok(())
    }

    /// Samples the free list's length after every [`HOLE_SAMPLE_DOMAINS`]th domain.
    fn sample(&mut self, domain_index: usize) {
        if domain_index % HOLE_SAMPLE_DOMAINS == HOLE_SAMPLE_DOMAINS - 1 {
            let holes = STUB_HEAP.figures().layout.hole_count;
            self.most_holes = self.most_holes.max(holes);
        }
    }
}

/// Everything the report needs.
struct Measurement {
    domains: usize,
    nodes_per_domain: usize,
    order: Order,
    toolstack_nodes: usize,
    data_nodes: usize,
    data_key_value_bytes: usize,
    data_value_bytes: usize,
    /// After start-up: engine, dom0's ring, the host's own nodes and dom0's watches.
    start: HeapFigures,
    start_nodes: usize,
    end: HeapFigures,
    steps: [StepTotals; 4],
    most_holes: usize,
    /// The class free lists holding the most bytes at the end: (block size, free blocks).
    class_free_lists: Vec<(usize, usize)>,
    rings: usize,
    ring_state_bytes: usize,
    domain_state_bytes: usize,
    pending_input_capacity_bytes: usize,
    watch_events: u64,
    seconds: f64,
}

fn measure(options: &Options) -> Result<Measurement, Box<dyn Error>> {
    let started = Instant::now();
    let domids: Vec<u16> = workload::guest_domids(options.domains).collect();
    let first_domid = domids.first().copied().ok_or("no domains")?;
    let toolstack_nodes = workload::toolstack_tally(first_domid).node_count();
    let data_nodes = options
        .nodes_per_domain
        .checked_sub(toolstack_nodes)
        .ok_or_else(|| {
            format!(
                "--nodes-per-domain {} is below the {toolstack_nodes} nodes libxl writes",
                options.nodes_per_domain
            )
        })?;
    // What the domains will hold, counted independently of the store.
    let mut data_key_value_bytes = 0;
    let mut data_value_bytes = 0;
    for &domid in &domids {
        let data = workload::guest_data(domid, data_nodes);
        let toolstack = workload::toolstack_tally(domid);
        let all = workload::with_guest_data(&toolstack, domid, &data);
        if all.node_count() != options.nodes_per_domain {
            return Err(format!(
                "domain {domid} would have {} nodes, not {}",
                all.node_count(),
                options.nodes_per_domain
            )
            .into());
        }
        data_key_value_bytes += all.key_value_bytes() - toolstack.key_value_bytes();
        data_value_bytes += data.iter().map(|(_, value)| value.len()).sum::<usize>();
    }

    let mut host = SimulatedHost::start()?;
    workload::set_up_host(&mut host)?;
    let start = STUB_HEAP.figures();
    let start_nodes = host.engine().node_count();
    let mut recorder = Recorder {
        totals: [StepTotals::default(); 4],
        most_holes: start.layout.hole_count,
    };
    match options.order {
        Order::Boot => {
            for (index, &domid) in domids.iter().enumerate() {
                for step in STEPS {
                    recorder.run_step(&mut host, step, domid, data_nodes)?;
                }
                recorder.sample(index);
            }
        }
        Order::Phases => {
            for step in STEPS {
                for (index, &domid) in domids.iter().enumerate() {
                    recorder.run_step(&mut host, step, domid, data_nodes)?;
                    recorder.sample(index);
                }
            }
        }
    }
    let end = STUB_HEAP.figures();
    let mut class_free_lists = STUB_HEAP.class_free_lists();
    class_free_lists.sort_by_key(|&(size, count)| std::cmp::Reverse(size * count));
    class_free_lists.truncate(LARGEST_CLASS_FREE_LISTS);

    // The run must have built what it claims, or the figures mean nothing.
    let end_nodes = host.engine().node_count();
    if end_nodes - start_nodes != options.domains * options.nodes_per_domain {
        return Err(format!(
            "the store grew by {} nodes, expected {} x {}",
            end_nodes - start_nodes,
            options.domains,
            options.nodes_per_domain
        )
        .into());
    }
    let introduced = host.engine().introduced_domains();
    if introduced.len() != options.domains + 1 || !introduced.contains(&DomainId(0)) {
        return Err(format!(
            "{} domains introduced, expected dom0 and {} guests",
            introduced.len(),
            options.domains
        )
        .into());
    }
    if !host.drained() {
        return Err("output queues or ring input not empty at the end".into());
    }
    if STUB_HEAP.exhausted() {
        return Err(format!(
            "the {} MiB arena was exhausted: the figures are incomplete",
            arena::ARENA_SIZE_BYTES >> 20
        )
        .into());
    }

    // The stub's own per-ring and per-domain state, measured by what dropping it frees.
    let rings = host.ring_count();
    let pending_input_capacity_bytes = host.pending_input_capacity_bytes();
    let before_drops = STUB_HEAP.used_bytes();
    host.drop_ring_state();
    let after_ring_drop = STUB_HEAP.used_bytes();
    host.drop_domain_states();
    let after_tracker_drop = STUB_HEAP.used_bytes();
    let watch_events = host.watch_events_received();
    // Freeing 100 000 nodes one by one tells nothing about a store that never shuts down:
    // the process exits instead.
    std::mem::forget(host);
    Ok(Measurement {
        domains: options.domains,
        nodes_per_domain: options.nodes_per_domain,
        order: options.order,
        toolstack_nodes,
        data_nodes,
        data_key_value_bytes,
        data_value_bytes,
        start,
        start_nodes,
        end,
        steps: recorder.totals,
        most_holes: recorder.most_holes.max(end.layout.hole_count),
        class_free_lists,
        rings,
        ring_state_bytes: before_drops.saturating_sub(after_ring_drop),
        domain_state_bytes: after_ring_drop.saturating_sub(after_tracker_drop),
        pending_input_capacity_bytes,
        watch_events,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn mebibytes(bytes: usize) -> f64 {
    bytes as f64 / MEBIBYTE
}

fn per(bytes: usize, count: usize) -> f64 {
    bytes as f64 / count.max(1) as f64
}

/// Derived figures shared by the table and the CSV row.
struct Summary {
    /// The smallest heap that served the run: the backing first fit never placed a block
    /// higher.
    heap_needed_bytes: usize,
    bytes_per_domain: f64,
    data_bytes_per_node_beyond_key_value: f64,
    ring_state_bytes_per_ring: f64,
    met: bool,
    /// The stub domain that heap needs.
    domain_size: DomainSize,
}

fn summarise(measurement: &Measurement, image: &ImageEnd) -> Summary {
    let data = measurement.steps[Step::GuestData.index()];
    let data_node_count = (measurement.domains * measurement.data_nodes).max(1);
    let heap_needed_bytes = measurement.end.extent_bytes;
    Summary {
        heap_needed_bytes,
        bytes_per_domain: per(
            measurement
                .end
                .used_bytes
                .saturating_sub(measurement.start.used_bytes),
            measurement.domains,
        ),
        data_bytes_per_node_beyond_key_value: (data.delta_bytes as f64
            - measurement.data_key_value_bytes as f64)
            / data_node_count as f64,
        ring_state_bytes_per_ring: per(measurement.ring_state_bytes, measurement.rings),
        met: heap_needed_bytes <= GOAL_BYTES,
        domain_size: DomainSize::for_heap(image.end_bytes(), heap_needed_bytes as u64),
    }
}

fn report(measurement: &Measurement, summary: &Summary, image: &ImageEnd) -> String {
    let domains = measurement.domains;
    let data_node_count = domains * measurement.data_nodes;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "stub-heap: the stub's heap (stub-allocator: size classes <= {} B over \
         linked_list_allocator 0.10 first fit) serving {domains} \
         domains x {} nodes, {}",
        stub_allocator::MAX_CLASS_BYTES,
        measurement.nodes_per_domain,
        measurement.order.name()
    );
    let _ = writeln!(
        text,
        "  per domain: {} libxl nodes (domain_make + build_post of a PVH guest, no devices; \
         directories included) + {} data nodes the guest writes through its ring (data/item-NN, \
         values 8..56 B, mean {:.0} B; key+value mean {:.0} B); 5 guest watches, 1 dom0 watch",
        measurement.toolstack_nodes,
        measurement.data_nodes,
        per(measurement.data_value_bytes, data_node_count),
        per(measurement.data_key_value_bytes, data_node_count),
    );
    let _ = writeln!(
        text,
        "{:<34} {:>10} {:>9} {:>12} {:>8} {:>7}",
        "step (all domains)", "delta KiB", "B/domain", "nodes/domain", "B/node", "s"
    );
    let _ = writeln!(
        text,
        "{:<34} {:>10.0} {:>9} {:>12} {:>8} {:>7}",
        "start: engine, dom0 ring, host",
        measurement.start.used_bytes as f64 / 1024.0,
        "-",
        format!("({} total)", measurement.start_nodes),
        "-",
        "-"
    );
    for step in STEPS {
        let totals = measurement.steps[step.index()];
        let per_node = if totals.nodes > 0 {
            format!("{:.0}", totals.delta_bytes as f64 / totals.nodes as f64)
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            text,
            "{:<34} {:>10.0} {:>9.0} {:>12.0} {:>8} {:>7.1}",
            step.name(),
            totals.delta_bytes as f64 / 1024.0,
            totals.delta_bytes as f64 / domains as f64,
            totals.nodes as f64 / domains as f64,
            per_node,
            totals.seconds
        );
    }
    let total_delta: i64 = measurement.steps.iter().map(|step| step.delta_bytes).sum();
    let total_seconds: f64 = measurement.steps.iter().map(|step| step.seconds).sum();
    let _ = writeln!(
        text,
        "{:<34} {:>10.0} {:>9.0} {:>12} {:>8.0} {:>7.1}",
        "all steps",
        total_delta as f64 / 1024.0,
        total_delta as f64 / domains as f64,
        measurement.nodes_per_domain,
        total_delta as f64 / (domains * measurement.nodes_per_domain) as f64,
        total_seconds
    );
    let _ = writeln!(
        text,
        "guest data nodes: {:.0} B/node beyond key+value; a step's delta includes the node \
         index's growth when it happens in that step",
        summary.data_bytes_per_node_beyond_key_value
    );
    let estimate_per_ring = host::guest_ring_size_bytes()
        + size_of::<u16>()
        + size_of::<(u32, u16)>()
        + size_of::<u32>()
        + measurement.pending_input_capacity_bytes / measurement.rings.max(1);
    let _ = writeln!(
        text,
        "stub ring state ({} rings, dom0's included; in the figures above): {:.0} B/ring \
         measured (GuestRing of {} B in the ring map, port map entry, poll-list entry, \
         pending_input keeping {:.0} B); from struct sizes, without B-tree nodes, \
         {estimate_per_ring} B/ring",
        measurement.rings,
        summary.ring_state_bytes_per_ring,
        host::guest_ring_size_bytes(),
        per(measurement.pending_input_capacity_bytes, measurement.rings),
    );
    let _ = writeln!(
        text,
        "stub domain-state tracker (Xen 4.21+ only; in the figures above): {:.0} B/domain \
         measured over {} domains (dom0 and the stub included)",
        per(measurement.domain_state_bytes, domains + 2),
        domains + 2,
    );
    let _ = writeln!(
        text,
        "ring pages: {} x 4 KiB grant-mapped frames, not heap: not counted",
        measurement.rings
    );
    let layout = measurement.end.layout;
    let _ = writeln!(
        text,
        "backing free list at the end: {} holes below the top block ({:.0} KiB, {:.1}% of the \
         top at {:.2} MiB; largest {} B); longest free list seen {} holes (sampled every \
         {HOLE_SAMPLE_DOMAINS} domains; first fit walks it for every block beyond the size \
         classes and every class chunk)",
        layout.hole_count,
        layout.hole_bytes as f64 / 1024.0,
        100.0 * layout.hole_bytes as f64 / layout.top_bytes.max(1) as f64,
        mebibytes(layout.top_bytes),
        layout.largest_hole_bytes,
        measurement.most_holes,
    );
    let _ = writeln!(
        text,
        "size classes (<= {} B): {:.0} KiB carved from the backing heap, {:.0} KiB of it in the \
         class free lists at the end (freed blocks stay with their class: in use for the backing \
         heap, free for their class only), {:.0} KiB reclaimed (given back when the backing heap \
         ran out); fullest lists: {}",
        stub_allocator::MAX_CLASS_BYTES,
        measurement.end.carved_bytes as f64 / 1024.0,
        measurement.end.class_free_bytes as f64 / 1024.0,
        measurement.end.reclaimed_bytes as f64 / 1024.0,
        measurement
            .class_free_lists
            .iter()
            .map(|(size, count)| format!("{count} x {size} B"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let _ = writeln!(
        text,
        "heap (SizeClassHeap::used()/free() of the {} MiB arena): in use (live blocks) {:.2} \
         MiB at the start, {:.2} MiB at the end ({:.0} B/domain), plus {:.2} MiB in class free \
         lists, free {:.2} MiB; peak in use {:.2} MiB, peak held from the backing heap (in use \
         + class free lists) {:.2} MiB; extent {:.2} MiB (the highest byte the backing first \
         fit handed out: the smallest heap that serves this run); {} watch events read; {:.1} s",
        arena::ARENA_SIZE_BYTES >> 20,
        mebibytes(measurement.start.used_bytes),
        mebibytes(measurement.end.used_bytes),
        summary.bytes_per_domain,
        mebibytes(measurement.end.class_free_bytes),
        mebibytes(measurement.end.free_bytes),
        mebibytes(measurement.end.peak_used_bytes),
        mebibytes(measurement.end.peak_held_bytes),
        mebibytes(summary.heap_needed_bytes),
        measurement.watch_events,
        measurement.seconds
    );
    let _ = writeln!(
        text,
        "16 MiB goal: {} ({:.2} MiB heap needed for {domains} domains x {} nodes; in use {:.2} \
         MiB + {:.2} MiB in class free lists; ring pages excluded)",
        if summary.met { "met" } else { "not met" },
        mebibytes(summary.heap_needed_bytes),
        measurement.nodes_per_domain,
        mebibytes(measurement.end.used_bytes),
        mebibytes(measurement.end.class_free_bytes),
    );
    match image {
        ImageEnd::Measured(image) => {
            let _ = writeln!(
                text,
                "kernel image {}: PT_LOAD segments {:#x}..{:#x} ({:.0} KiB loaded, .bss \
                 included); the heap starts above it and the boot data",
                image.path.display(),
                image.load_start_bytes,
                image.end_bytes,
                image.loaded_bytes as f64 / 1024.0,
            );
        }
        ImageEnd::Assumed(reason) => {
            let _ = writeln!(
                text,
                "kernel image not read ({reason}; `cargo kernel` builds it, --kernel names \
                 it): assumed to end at {} MiB",
                domain_size::ASSUMED_IMAGE_END_BYTES >> 20
            );
        }
    }
    let _ = writeln!(text, "{}", summary.domain_size);
    text
}

fn csv_row(measurement: &Measurement, summary: &Summary, image: &ImageEnd) -> String {
    let note = format!(
        "in use {:.2} MiB + {:.2} MiB in class free lists, peak held {:.2} MiB; {:.0} B/domain; \
         {:.0} B/data node beyond key+value; stub ring state {:.0} B/ring; ring pages excluded; \
         16 MiB goal {}; domain size needed {} MiB (image{}, boot data, heap, guest reserve)",
        mebibytes(measurement.end.used_bytes),
        mebibytes(measurement.end.class_free_bytes),
        mebibytes(measurement.end.peak_held_bytes),
        summary.bytes_per_domain,
        summary.data_bytes_per_node_beyond_key_value,
        summary.ring_state_bytes_per_ring,
        if summary.met { "met" } else { "not met" },
        summary.domain_size.memory_mebibytes(),
        if matches!(image, ImageEnd::Assumed(_)) {
            " assumed to end at 2 MiB"
        } else {
            ""
        },
    );
    format!(
        "W13,\"stub heap: {} domains x {} nodes, {} (size classes + linked_list_allocator)\",ours,\
         NaN,NaN,NaN,\
         NaN,NaN,NaN,{},NaN,\"MiB heap needed (first-fit extent)\",{:.2},\"{note}\"\n",
        measurement.domains,
        measurement.nodes_per_domain,
        measurement.order.name(),
        measurement.end.peak_held_bytes / 1024,
        mebibytes(summary.heap_needed_bytes),
    )
}

fn append_csv(path: &Path, row: &str) -> std::io::Result<()> {
    let needs_header = std::fs::metadata(path).map_or(true, |metadata| metadata.len() == 0);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if needs_header {
        writeln!(file, "{CSV_HEADER}")?;
    }
    file.write_all(row.as_bytes())
}

fn main() -> ExitCode {
    let options = match parse_arguments() {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("stub-heap: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = STUB_HEAP.start(arena::ARENA_SIZE_BYTES, WhenExhausted::UseSystemAllocator)
    {
        eprintln!("stub-heap: {error}");
        return ExitCode::FAILURE;
    }
    let measurement = match measure(&options) {
        Ok(measurement) => measurement,
        Err(error) => {
            eprintln!("stub-heap: {error}");
            return ExitCode::FAILURE;
        }
    };
    let image = domain_size::image_end(&options.kernel);
    let summary = summarise(&measurement, &image);
    print!("{}", report(&measurement, &summary, &image));
    if let Some(path) = &options.append_csv
        && let Err(error) = append_csv(path, &csv_row(&measurement, &summary, &image))
    {
        eprintln!("stub-heap: appending to {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    // The arena is not started in tests: everything goes to the system allocator, and what is
    // checked is that the run builds the host it claims (figures are not asserted: they are
    // a benchmark's result, not a property).

    fn small_run(order: Order) -> Measurement {
        let options = Options {
            domains: 3,
            nodes_per_domain: 100,
            order,
            kernel: default_kernel_image(),
            append_csv: None,
        };
        match measure(&options) {
            Ok(measurement) => measurement,
            Err(error) => panic!("{order:?}: {error}"),
        }
    }

    #[test]
    fn every_domain_gets_its_nodes_rings_and_watches_in_either_order() {
        for order in [Order::Boot, Order::Phases] {
            let measurement = small_run(order);
            // measure() itself fails unless the store grew by exactly 3 x 100 nodes, dom0
            // and the 3 guests are introduced and every queue is drained.
            assert_eq!(measurement.rings, 4, "{order:?}");
            assert_eq!(measurement.toolstack_nodes + measurement.data_nodes, 100);
            let nodes: i64 = measurement.steps.iter().map(|step| step.nodes).sum();
            assert_eq!(nodes, 300, "{order:?}");
            assert_eq!(measurement.steps[Step::LibxlNodes.index()].nodes, 3 * 44);
            // dom0's 2 special watches fire once at XS_WATCH; each guest's introduction
            // fires @introduceDomain; each of the 6 watches per guest fires once at XS_WATCH.
            assert_eq!(measurement.watch_events, 2 + 3 + 3 * 6, "{order:?}");
        }
    }

    #[test]
    fn guest_data_values_span_8_to_56_bytes() {
        let data = workload::guest_data(42, 56);
        let lengths: Vec<usize> = data.iter().map(|(_, value)| value.len()).collect();
        assert_eq!(lengths.iter().min(), Some(&8));
        assert_eq!(lengths.iter().max(), Some(&56));
        assert!(data.iter().all(|(path, _)| path.starts_with("data/item-")));
    }

    #[test]
    fn too_few_nodes_per_domain_for_libxl_is_an_error() {
        let options = Options {
            domains: 1,
            nodes_per_domain: 10,
            order: Order::Boot,
            kernel: default_kernel_image(),
            append_csv: None,
        };
        assert!(measure(&options).is_err());
    }
}

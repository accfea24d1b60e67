//! What a busy host stores per guest: the nodes libxl writes when `xl create` builds a PVH
//! guest, the data nodes the guest writes itself, and the watches its kernel and dom0's
//! console daemon hold; plus the requests that put them there.

use std::collections::BTreeMap;

use xenstore_engine::wire::MessageType;

use crate::host::{DOM0, HostError, STUB_DOMID, SimulatedHost};

/// The watches a Linux PVH guest's kernel sets (`drivers/xen`: `manage.c` shutdown and
/// sysrq, `balloon`, `cpu_hotplug.c`, the xenbus frontend), relative to its home.
pub const GUEST_WATCHES: [&str; 5] = [
    "control/shutdown",
    "control/sysrq",
    "memory/target",
    "cpu",
    "device",
];
/// Guest watch tokens: Linux passes the watch's address, printed as 16 hex digits.
const GUEST_WATCH_TOKEN_BYTES: usize = 16;
/// Nodes every domain's nodes hang below, created once at host start.
const SHARED_PARENTS: [&str; 5] = ["/", "/local", "/local/domain", "/vm", "/libxl"];

/// One toolstack request.
#[derive(Clone, Debug)]
pub enum ToolstackRequest {
    /// `libxl__xs_mknod`: an empty node, then its permissions.
    Mknod {
        path: String,
        permissions: Vec<String>,
    },
    Write {
        path: String,
        value: String,
    },
}

/// The guest's UUID (what `/vm/UUID` is named after).
fn uuid(domid: u16) -> String {
    format!("5c3b9f2e-1d4a-4c6b-9e7f-{domid:012x}")
}

fn guest_name(domid: u16) -> String {
    format!("guest-{domid:04}")
}

/// The subtrees libxl makes for a domain and removes when it destroys it: its home,
/// `/vm/UUID` and `/libxl/ID`. (Used by the small-heap test, which destroys domains.)
#[cfg(test)]
pub fn domain_roots(domid: u16) -> [String; 3] {
    [
        format!("/local/domain/{domid}"),
        format!("/vm/{}", uuid(domid)),
        format!("/libxl/{domid}"),
    ]
}

/// `libxl__domain_make` (Xen 4.17, PVH, one transaction): home, `/vm/UUID`, `/libxl/ID`, the
/// directories the guest may write, and the names.
pub fn domain_make(domid: u16) -> Vec<ToolstackRequest> {
    let home = format!("/local/domain/{domid}");
    let vm = format!("/vm/{}", uuid(domid));
    let libxl = format!("/libxl/{domid}");
    let read_only = vec!["n0".to_string(), format!("r{domid}")];
    let guest_writable = vec![format!("n{domid}")];
    let mknod = |path: String, permissions: &Vec<String>| ToolstackRequest::Mknod {
        path,
        permissions: permissions.clone(),
    };
    let write = |path: String, value: String| ToolstackRequest::Write { path, value };
    let mut requests = vec![
        mknod(home.clone(), &read_only),
        mknod(vm.clone(), &read_only),
        mknod(format!("{home}/device"), &read_only),
        mknod(format!("{home}/control"), &read_only),
    ];
    for writable in [
        "control/shutdown",
        "control/feature-poweroff",
        "control/feature-reboot",
        "control/feature-suspend",
        "control/sysrq",
        "data",
        "drivers",
        "feature",
        "attr",
        "error",
    ] {
        requests.push(mknod(format!("{home}/{writable}"), &guest_writable));
    }
    requests.push(mknod(libxl.clone(), &vec!["n0".to_string()]));
    requests.extend([
        write(format!("{home}/vm"), vm.clone()),
        write(format!("{home}/name"), guest_name(domid)),
        write(
            format!("{home}/control/platform-feature-multiprocessor-suspend"),
            "1".into(),
        ),
        write(
            format!("{home}/control/platform-feature-xs_reset_watches"),
            "1".into(),
        ),
        write(format!("{vm}/uuid"), uuid(domid)),
        write(format!("{vm}/name"), guest_name(domid)),
        write(format!("{vm}/image/ostype"), "linux".into()),
        write(format!("{vm}/start_time"), "1718000000.42".into()),
        write(format!("{libxl}/type"), "pvh".into()),
        write(format!("{libxl}/dm-version"), "qemu_xen".into()),
    ]);
    requests
}

/// `libxl__build_post` (one transaction, before `XS_INTRODUCE`): memory, vCPUs (2), the store
/// and console rings. No devices: a vif or vbd would add frontend nodes here and backend nodes
/// under dom0's home.
pub fn build_post(domid: u16) -> Vec<ToolstackRequest> {
    let home = format!("/local/domain/{domid}");
    [
        ("memory/static-max", "524288"),
        ("memory/target", "524288"),
        ("memory/videoram", "0"),
        ("domid", &domid.to_string()),
        ("cpu/0/availability", "online"),
        ("cpu/1/availability", "online"),
        ("store/port", "1"),
        ("store/ring-ref", "1044476"),
        ("console/port", "2"),
        ("console/ring-ref", "1044479"),
        ("console/limit", "1048576"),
        ("console/type", "xenconsoled"),
    ]
    .into_iter()
    .map(|(relative, value)| ToolstackRequest::Write {
        path: format!("{home}/{relative}"),
        value: value.to_string(),
    })
    .collect()
}

/// The nodes a domain adds to the store and their key+value bytes (full path plus value, as
/// W13 counts them): every path written and every directory above it below the shared parents.
#[derive(Clone, Debug, Default)]
pub struct NodeTally {
    values: BTreeMap<String, String>,
}

impl NodeTally {
    pub fn add(&mut self, path: &str, value: &str) {
        let mut prefix_end = 0;
        while let Some(offset) = path.get(prefix_end + 1..).and_then(|rest| rest.find('/')) {
            prefix_end += 1 + offset;
            let prefix = path.get(..prefix_end).unwrap_or(path);
            if !SHARED_PARENTS.contains(&prefix) {
                self.values.entry(prefix.to_string()).or_default();
            }
        }
        self.values.insert(path.to_string(), value.to_string());
    }

    pub fn node_count(&self) -> usize {
        self.values.len()
    }

    pub fn key_value_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|(path, value)| path.len() + value.len())
            .sum()
    }
}

/// The toolstack's nodes of one domain.
pub fn toolstack_tally(domid: u16) -> NodeTally {
    let mut tally = NodeTally::default();
    for request in domain_make(domid).into_iter().chain(build_post(domid)) {
        match request {
            ToolstackRequest::Mknod { path, .. } => tally.add(&path, ""),
            ToolstackRequest::Write { path, value } => tally.add(&path, &value),
        }
    }
    tally
}

/// The data nodes a guest writes below its home (relative paths): `data/item-NN` with values of
/// 8 to 56 bytes (mean 32), the size of what guest agents publish (addresses, versions, states).
pub fn guest_data(domid: u16, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|index| {
            let length = 8 + (index * 13) % 49;
            let mut value = format!("{domid}:{index}:");
            while value.len() < length {
                value.push('x');
            }
            value.truncate(length);
            (format!("data/item-{index:02}"), value)
        })
        .collect()
}

/// A payload of NUL-terminated strings.
pub fn strings(parts: &[&str]) -> Vec<u8> {
    let mut payload = Vec::new();
    for part in parts {
        payload.extend_from_slice(part.as_bytes());
        payload.push(0);
    }
    payload
}

/// `XS_WRITE`: path, NUL, value (no NUL after the value).
pub fn write_payload(path: &str, value: &str) -> Vec<u8> {
    let mut payload = strings(&[path]);
    payload.extend_from_slice(value.as_bytes());
    payload
}

/// What dom0 and the stub's start-up write before any guest (`xen-init-dom0`,
/// `init-xenstore-domain`), and the watches of dom0's daemons (xenconsoled, libxl).
pub fn set_up_host(host: &mut SimulatedHost) -> Result<(), HostError> {
    for (path, value) in [
        ("/local/domain/0/name", "Domain-0".to_string()),
        ("/local/domain/0/domid", "0".to_string()),
        (
            &format!("/local/domain/{STUB_DOMID}/name") as &str,
            "Xenstore".to_string(),
        ),
        (
            &format!("/local/domain/{STUB_DOMID}/domid"),
            STUB_DOMID.to_string(),
        ),
        ("/vm", String::new()),
        ("/libxl", String::new()),
    ] {
        host.request(DOM0, MessageType::Write, 0, &write_payload(path, &value))?;
    }
    for special in ["@introduceDomain", "@releaseDomain"] {
        host.request(DOM0, MessageType::Watch, 0, &strings(&[special, "xl"]))?;
    }
    Ok(())
}

fn run_transaction(
    host: &mut SimulatedHost,
    requests: &[ToolstackRequest],
) -> Result<(), HostError> {
    let reply = host.request(DOM0, MessageType::TransactionStart, 0, &strings(&[""]))?;
    let transaction_id = String::from_utf8_lossy(&reply)
        .trim_end_matches('\0')
        .parse::<u32>()
        .map_err(|_| HostError::Refused {
            domid: DOM0,
            request: MessageType::TransactionStart,
            errno: format!("unparsable transaction id {reply:?}"),
        })?;
    for request in requests {
        match request {
            ToolstackRequest::Mknod { path, permissions } => {
                host.request(
                    DOM0,
                    MessageType::Write,
                    transaction_id,
                    &write_payload(path, ""),
                )?;
                let mut parts = vec![path.as_str()];
                parts.extend(permissions.iter().map(String::as_str));
                host.request(
                    DOM0,
                    MessageType::SetPermissions,
                    transaction_id,
                    &strings(&parts),
                )?;
            }
            ToolstackRequest::Write { path, value } => {
                host.request(
                    DOM0,
                    MessageType::Write,
                    transaction_id,
                    &write_payload(path, value),
                )?;
            }
        }
    }
    host.request(
        DOM0,
        MessageType::TransactionEnd,
        transaction_id,
        &strings(&["T"]),
    )?;
    Ok(())
}

/// The hypervisor creates domain `domid` (the stub hears of it through `VIRQ_DOM_EXC`) and
/// dom0's toolstack builds its nodes (two transactions, as libxl does).
pub fn create_domain_nodes(host: &mut SimulatedHost, domid: u16) -> Result<(), HostError> {
    host.domains_created(vec![domid])?;
    run_transaction(host, &domain_make(domid))?;
    run_transaction(host, &build_post(domid))
}

/// `XS_INTRODUCE` of `domid` (ring frame and port as `build_post` published them).
pub fn introduce(host: &mut SimulatedHost, domid: u16) -> Result<(), HostError> {
    let domid_text = domid.to_string();
    host.request(
        DOM0,
        MessageType::Introduce,
        0,
        &strings(&[&domid_text, "1044476", "1"]),
    )?;
    Ok(())
}

/// The guest writes its data nodes through its own ring.
pub fn write_guest_data(
    host: &mut SimulatedHost,
    domid: u16,
    data: &[(String, String)],
) -> Result<(), HostError> {
    for (path, value) in data {
        host.request(domid, MessageType::Write, 0, &write_payload(path, value))?;
    }
    Ok(())
}

/// The guest kernel's watches, and xenconsoled's watch on the guest's console (dom0).
pub fn add_watches(host: &mut SimulatedHost, domid: u16) -> Result<(), HostError> {
    for (index, path) in GUEST_WATCHES.iter().enumerate() {
        let token = format!(
            "{:0width$x}",
            0xffff_8880_0400_0000u64 + index as u64 * 0x40,
            width = GUEST_WATCH_TOKEN_BYTES
        );
        host.request(domid, MessageType::Watch, 0, &strings(&[path, &token]))?;
    }
    let console = format!("/local/domain/{domid}/console");
    host.request(
        DOM0,
        MessageType::Watch,
        0,
        &strings(&[&console, &domid.to_string()]),
    )?;
    Ok(())
}

/// Domain ids of the guests: after dom0 and the stub domain.
pub fn guest_domids(domains: usize) -> impl Iterator<Item = u16> {
    (0..domains).map(|index| STUB_DOMID + 1 + index as u16)
}

/// The domain's nodes once the guest wrote `data` (relative paths) below its home.
pub fn with_guest_data(toolstack: &NodeTally, domid: u16, data: &[(String, String)]) -> NodeTally {
    let mut tally = toolstack.clone();
    for (path, value) in data {
        tally.add(&format!("/local/domain/{domid}/{path}"), value);
    }
    tally
}

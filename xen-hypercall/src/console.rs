//! Console output: `HYPERVISOR_console_io` (`xen.h`) and the PV console ring (`io/console.h`).
//!
//! `console_io` from a domU is refused (`-EPERM`) on release builds of Xen with the default
//! XSM policy; the PV ring needs xenconsoled in dom0. Port 0xE9 (in the kernel) is the
//! channel that always works.

use core::sync::atomic::{AtomicU8, AtomicU32};

use crate::abi_layout;
use crate::errno::XenResult;
use crate::hypercall::{Hypervisor, number};

/// `CONSOLEIO_write`.
pub const CONSOLEIO_WRITE: u64 = 0;

/// Bytes in the ring's input (dom0 → guest) array.
pub const CONSOLE_INPUT_SIZE_BYTES: usize = 1024;
/// Bytes in the ring's output (guest → dom0) array.
pub const CONSOLE_OUTPUT_SIZE_BYTES: usize = 2048;

/// `struct xencons_interface`: the shared PV console page. Indices are free-running and
/// reduced modulo the array size; the producer publishes its index after a write barrier.
#[repr(C)]
pub struct XenconsInterface {
    pub input: [AtomicU8; CONSOLE_INPUT_SIZE_BYTES],
    pub output: [AtomicU8; CONSOLE_OUTPUT_SIZE_BYTES],
    pub in_cons: AtomicU32,
    pub in_prod: AtomicU32,
    pub out_cons: AtomicU32,
    pub out_prod: AtomicU32,
    /// `XENCONSOLE_CONNECTED` 0 / `XENCONSOLE_DISCONNECTED` 1 (Xen >= 4.21; 0 before).
    pub connection: AtomicU8,
}

abi_layout!(XenconsInterface: at most 4096 bytes {
    output: 1024, in_cons: 3072, in_prod: 3076, out_cons: 3080, out_prod: 3084, connection: 3088,
});

impl Hypervisor {
    /// `CONSOLEIO_write` of `text` to Xen's console (debug hypervisors, or dom0).
    pub fn console_io_write(&self, text: &[u8]) -> XenResult<()> {
        // SAFETY: Xen reads `text.len()` bytes from `text`, alive for the call.
        unsafe {
            self.hypercall(
                number::CONSOLE_IO,
                [
                    CONSOLEIO_WRITE,
                    text.len() as u64,
                    text.as_ptr() as u64,
                    0,
                    0,
                ],
            )
        }?;
        Ok(())
    }
}

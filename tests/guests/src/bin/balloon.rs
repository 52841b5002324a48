//! Ballooning from inside the guest, as Linux's balloon driver does it (XENMEM_decrease_reservation and
//! XENMEM_populate_physmap for DOMID_SELF): pages given back leave the domain and XENMEM_current_reservation
//! drops by as many; populated again they come back zeroed; the domain cannot grow past XENMEM_maximum_reservation;
//! bad requests (a GFN given back twice, one past RAM or past the p2m's reach, a misaligned or too large extent,
//! more extents than a continuation can encode) do nothing and say so in the count. The pages used lie between the
//! guest image and the end of RAM, which this guest finds with XENMEM_memory_map; 4 MiB of RAM is enough.
#![cfg_attr(target_os = "none", no_std, no_main)]

use keel_abi::hypercall::nr;
use keel_abi::shared_info::{xenmem, XenMemoryMap, XenMemoryReservation};
use keel_abi::DOMID_SELF;
use xtf::ensure;
use xtf::hypercall;

xtf::guest!(test_main);

const PAGE: u64 = 4096;
/// 4 KiB pages given back one by one.
const SMALL: u64 = 16;
/// An ordinary domain's largest extent order (Xen's CONFIG_DOMU_MAX_ORDER): 2 MiB.
const ORDER_2M: u32 = 9;

/// XENMEM reservation call `op` over `gfns` (extents of 2^order pages): the raw return value.
fn reserve(op: u64, gfns: &[u64], order: u32) -> i64 {
    let mut r = XenMemoryReservation {
        extent_start: gfns.as_ptr() as u64,
        nr_extents: gfns.len() as u64,
        extent_order: order,
        domid: DOMID_SELF,
        ..Default::default()
    };
    // SAFETY: the call reads `r` and the GFN list (identity-mapped, ours); what it removes or adds are the
    // GFNs this test chose, between the guest image and the end of RAM, which nothing else uses.
    unsafe { hypercall::op_raw(nr::MEMORY_OP, op, &mut r) }
}

fn decrease(gfns: &[u64], order: u32) -> i64 {
    reserve(xenmem::DECREASE_RESERVATION, gfns, order)
}

fn populate(gfns: &[u64], order: u32) -> i64 {
    reserve(xenmem::POPULATE_PHYSMAP, gfns, order)
}

/// XENMEM_current_reservation or maximum_reservation of this domain.
fn stat(op: u64) -> i64 {
    let mut domid = DOMID_SELF;
    // SAFETY: the query only reads the domid.
    unsafe { hypercall::op_raw(nr::MEMORY_OP, op, &mut domid) }
}

fn current() -> i64 {
    stat(xenmem::CURRENT_RESERVATION)
}

/// End of RAM from XENMEM_memory_map.
fn ram_end() -> Result<u64, xtf::Outcome> {
    let mut entries = [0u8; 20 * 8];
    let mut map = XenMemoryMap { nr_entries: 8, pad: 0, buffer: entries.as_mut_ptr() as u64 };
    // SAFETY: XENMEM_memory_map only writes `map` and up to 8 entries into `entries`.
    let rc = unsafe { hypercall::op_raw(nr::MEMORY_OP, xenmem::MEMORY_MAP, &mut map) };
    ensure!(rc == 0, "XENMEM_memory_map returned {rc}");
    let mut end = 0;
    for e in entries.chunks(20).take(map.nr_entries.min(8) as usize) {
        let addr = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
        let size = u64::from_le_bytes(e[8..16].try_into().unwrap_or_default());
        if u32::from_le_bytes(e[16..20].try_into().unwrap_or_default()) == 1 {
            end = end.max(addr + size);
        }
    }
    Ok(end)
}

fn fill(gfn: u64, pages: u64, value: u64) {
    for p in 0..pages {
        for w in 0..PAGE / 8 {
            // SAFETY: the page is RAM of this guest (identity-mapped) that only this test uses.
            unsafe { core::ptr::write_volatile(((gfn + p) * PAGE + w * 8) as *mut u64, value) };
        }
    }
}

/// Whether every word of the pages is zero.
fn zeroed(gfn: u64, pages: u64) -> bool {
    (0..pages).all(|p| {
        (0..PAGE / 8).all(|w| {
            // SAFETY: as in `fill`; the page was just populated.
            unsafe { core::ptr::read_volatile(((gfn + p) * PAGE + w * 8) as *const u64) == 0 }
        })
    })
}

fn test_main() -> xtf::TestResult {
    let end = ram_end()?;
    extern "C" {
        static __bss_end: u8;
    }
    let image_end = (&raw const __bss_end) as u64;
    // The last 2 MiB of RAM as one extent, and 4 KiB pages from just below it (the guest runs in 4 MiB: the Bochs
    // step boots every guest at once).
    let big = end / PAGE - 512;
    let small = big - 32;
    ensure!(image_end <= small * PAGE, "the guest image ends at {image_end:#x}, past {:#x}", small * PAGE);
    let (cur, max) = (current(), stat(xenmem::MAXIMUM_RESERVATION));
    xtf::println!("RAM ends at {end:#x}; current_reservation {cur}, maximum_reservation {max} pages");
    // Mapping shared_info over a frame of the image (the runtime does, for instance to wait for `start_ms`) gives
    // that RAM page back, as on Xen.
    let ram = end / PAGE - u64::from(xtf::xen::shared_info_if_mapped().is_some());
    ensure!(cur as u64 == ram, "current_reservation {cur}, RAM less shared_info's frame is {ram} pages");
    ensure!(max >= cur, "maximum_reservation {max} below current_reservation {cur}");

    // Give back 16 pages one by one, then a 2 MiB extent.
    let pages: [u64; SMALL as usize] = core::array::from_fn(|i| small + i as u64);
    fill(small, SMALL, 0xba11_0070_ba11_0070);
    fill(big, 512, 0x5eed_5eed_5eed_5eed);
    let rc = decrease(&pages, 0);
    ensure!(rc == SMALL as i64, "decrease_reservation of {SMALL} pages returned {rc}");
    ensure!(current() == cur - SMALL as i64, "current_reservation {} after giving back {SMALL}", current());
    ensure!(decrease(&[big + 1], ORDER_2M) == 0, "a misaligned 2 MiB extent was taken");
    ensure!(decrease(&[big], ORDER_2M + 1) == 0, "an order-10 extent was taken from an ordinary domain");
    let rc = decrease(&[big], ORDER_2M);
    ensure!(rc == 1, "decrease_reservation of a 2 MiB extent returned {rc}");
    let after = cur - SMALL as i64 - 512;
    ensure!(current() == after, "current_reservation {}, want {after}", current());
    xtf::println!("gave back {SMALL} pages and a 2 MiB extent: current_reservation {after}");

    // Bad requests change nothing: a page already given back (alone, or after a good one, which goes), GFNs
    // past RAM and past the p2m's reach, too many extents.
    ensure!(decrease(&[small], 0) == 0, "a page given back twice");
    let keep = small + SMALL;
    let rc = decrease(&[keep, small, keep + 1], 0);
    ensure!(rc == 1, "a list with a bad second extent returned {rc}, want 1");
    for bad in [end / PAGE, 1 << 36, 1 << 40, u64::MAX] {
        ensure!(decrease(&[bad], 0) == 0, "gfn {bad:#x} given back");
    }
    let mut huge = XenMemoryReservation {
        extent_start: pages.as_ptr() as u64,
        nr_extents: 1 << 26,
        domid: DOMID_SELF,
        ..Default::default()
    };
    // SAFETY: as in `reserve`; the call must refuse the count before it reads the list.
    let rc = unsafe { hypercall::op_raw(nr::MEMORY_OP, xenmem::DECREASE_RESERVATION, &mut huge) };
    ensure!(rc == 0, "2^26 extents: returned {rc}");
    ensure!(current() == after - 1, "current_reservation {}, want {}", current(), after - 1);

    // Populate them back: fresh zeroed frames, and the count returns to where it was.
    let rc = populate(&pages, 0);
    ensure!(rc == SMALL as i64, "populate_physmap of {SMALL} pages returned {rc}");
    ensure!(populate(&[keep], 0) == 1, "populate of the page given back in the list");
    let rc = populate(&[big], ORDER_2M);
    ensure!(rc == 1, "populate_physmap of a 2 MiB extent returned {rc}");
    ensure!(zeroed(small, SMALL) && zeroed(big, 512) && zeroed(keep, 1), "populated pages are not zeroed");
    ensure!(current() == cur, "current_reservation {} after populating back, want {cur}", current());
    ensure!(populate(&[small], 0) == 0, "populate over RAM that is there");
    fill(small, SMALL, 1);
    xtf::println!("populated back {SMALL} pages and the 2 MiB extent, zeroed: current_reservation {cur}");

    // The bound: at maximum_reservation, a page past RAM is refused; one given back makes room for it.
    let past = end / PAGE;
    let room = max - cur;
    if room > 0 {
        xtf::println!("maximum_reservation leaves room for {room} pages beyond RAM");
    }
    let over: [u64; 2] = [past + room as u64, past + room as u64 + 1];
    let mut filled = 0;
    for g in 0..room as u64 {
        filled += populate(&[past + g], 0);
    }
    ensure!(filled == room, "{filled} of {room} pages populated up to maximum_reservation");
    ensure!(populate(&over, 0) == 0, "populated past maximum_reservation ({max} pages)");
    ensure!(decrease(&[small], 0) == 1, "giving back a page at the bound");
    ensure!(populate(&over, 0) == 1, "the page given back did not make room for exactly one");
    // SAFETY: the page was just populated at this GFN, identity-mapped.
    unsafe { core::ptr::write_volatile((over[0] * PAGE) as *mut u64, 0x0123) };
    ensure!(current() == max, "current_reservation {} at the bound, want {max}", current());
    // Back to the start.
    ensure!(decrease(&[over[0]], 0) == 1, "giving back the page past RAM");
    for g in 0..room as u64 {
        ensure!(decrease(&[past + g], 0) == 1, "giving back page {g} past RAM");
    }
    ensure!(populate(&[small], 0) == 1, "populating the first page again");
    ensure!(current() == cur, "current_reservation {}, want {cur}", current());
    xtf::println!("maximum_reservation {max} bounds populate_physmap; current_reservation back to {cur}");
    Ok(())
}

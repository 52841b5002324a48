//! The CMOS real-time clock, read once at boot for the guests' wall clock.

use super::cpu;
use core::sync::atomic::{AtomicU64, Ordering};

static BOOT_EPOCH_NS: AtomicU64 = AtomicU64::new(0);

fn read_reg(reg: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the CMOS index/data pair; Keel is their only user, and bit 7 of the index
    // (NMI disable) is kept clear as firmware left it.
    unsafe {
        cpu::outb(0x70, reg);
        cpu::inb(0x71)
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads the RTC and records the wall-clock time of system time 0.
pub fn init() {
    // Wait for the end of an update cycle, then read twice until stable.
    let read = || {
        while read_reg(0x0a) & 0x80 != 0 {
            core::hint::spin_loop();
        }
        [read_reg(0x00), read_reg(0x02), read_reg(0x04), read_reg(0x07), read_reg(0x08), read_reg(0x09), read_reg(0x32)]
    };
    // Wait for the seconds to tick over, so that the reading is exact to the RTC's own precision rather than
    // up to a second late (at most one second of waiting, once, at boot).
    let first = read();
    let deadline = super::time::now_ns() + 1_100_000_000;
    let mut v = first;
    while v[0] == first[0] && super::time::now_ns() < deadline {
        v = read();
    }
    let status_b = read_reg(0x0b);
    let bcd = status_b & 0x04 == 0;
    let conv = |x: u8| if bcd { (x & 0x0f) + (x >> 4) * 10 } else { x };
    let (sec, min) = (conv(v[0]), conv(v[1]));
    let mut hour = conv(v[2] & 0x7f);
    if status_b & 0x02 == 0 && v[2] & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    let (day, month, year) = (conv(v[3]), conv(v[4]), conv(v[5]));
    let century = if v[6] != 0 && v[6] != 0xff { conv(v[6]) as i64 } else { 20 };
    let full_year = century * 100 + year as i64;
    let days = days_from_civil(full_year, month as u32, day as u32);
    let epoch_s = days * 86_400 + hour as i64 * 3600 + min as i64 * 60 + sec as i64;
    let now = super::time::now_ns();
    BOOT_EPOCH_NS.store((epoch_s.max(0) as u64 * 1_000_000_000).saturating_sub(now), Ordering::Relaxed);
    crate::info!("RTC: {full_year:04}-{month:02}-{day:02} {hour:02}:{min:02}:{sec:02} UTC");
}

/// Wall-clock ns since the epoch at system time 0.
pub fn boot_epoch_ns() -> u64 {
    BOOT_EPOCH_NS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 27), 20_784);
    }
}

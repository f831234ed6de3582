//! ISO 8601 text of a [`Timestamp`] without `chrono`'s formatting machinery: the projection
//! renderers format every timestamp of a session at each rewrite, and `chrono`'s
//! `format("%Y-...")` (a parsed format string, a `fmt::Write` per item) dominated their
//! profile. The output is byte for byte what `chrono` writes for the same format (checked
//! against it below on random and edge values).

use crate::types::Timestamp;

/// Days since 1970-01-01 to a civil (proleptic Gregorian) date, Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn push2(out: &mut String, v: u32) {
    out.push(char::from(b'0' + (v / 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS`, then `.ffffff` when `micros`, then `Z` when `z`.
/// Out-of-range values clamp to the epoch, as [`Timestamp::to_datetime`] does; years
/// outside 0..=9999 (never a real session's) are left to `chrono`.
pub(crate) fn push_iso(out: &mut String, t: Timestamp, micros: bool, z: bool) {
    let us = t.0;
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        let fmt = match (micros, z) {
            (true, true) => "%Y-%m-%dT%H:%M:%S%.6fZ",
            (true, false) => "%Y-%m-%dT%H:%M:%S%.6f",
            (false, true) => "%Y-%m-%dT%H:%M:%SZ",
            (false, false) => "%Y-%m-%dT%H:%M:%S",
        };
        out.push_str(&t.to_datetime().format(fmt).to_string());
        return;
    }
    let y = y as u32;
    push2(out, y / 100);
    push2(out, y % 100);
    out.push('-');
    push2(out, m);
    out.push('-');
    push2(out, d);
    out.push('T');
    push2(out, sod / 3600);
    out.push(':');
    push2(out, sod / 60 % 60);
    out.push(':');
    push2(out, sod % 60);
    if micros {
        out.push('.');
        push2(out, frac / 10_000);
        push2(out, frac / 100 % 100);
        push2(out, frac % 100);
    }
    if z {
        out.push('Z');
    }
}

/// `t` as [`push_iso`] writes it.
pub(crate) fn iso(t: Timestamp, micros: bool, z: bool) -> String {
    let mut out = String::with_capacity(28);
    push_iso(&mut out, t, micros, z);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SplitMix64;

    fn chrono_iso(t: Timestamp, micros: bool, z: bool) -> String {
        let f = match (micros, z) {
            (true, true) => "%Y-%m-%dT%H:%M:%S%.6fZ",
            (true, false) => "%Y-%m-%dT%H:%M:%S%.6f",
            (false, true) => "%Y-%m-%dT%H:%M:%SZ",
            (false, false) => "%Y-%m-%dT%H:%M:%S",
        };
        t.to_datetime().format(f).to_string()
    }

    #[test]
    fn it_writes_what_chrono_writes() {
        let mut rng = SplitMix64::new(13);
        let mut values: Vec<i64> = vec![
            0,
            -1,
            1,
            999_999,
            -1_000_000,
            951_782_400_000_000,     // 2000-02-29
            4_107_542_400_000_000,   // 2100-02-28
            -62_167_219_200_000_000, // 0000-01-01
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // 10000-01-01
            -62_167_219_200_000_001,
            i64::MAX,
            i64::MIN,
        ];
        for _ in 0..200_000 {
            let r = rng.next_u64();
            values.push(match r % 4 {
                // Around now (2020-2040).
                0 => 1_577_836_800_000_000 + (r >> 2) as i64 % 631_152_000_000_000,
                // Any year 0..=9999.
                1 => -62_167_219_200_000_000 + ((r >> 2) % 315_569_520_000_000_000) as i64,
                // Whole seconds.
                2 => ((r >> 2) as i64 % 253_402_300_800) * 1_000_000,
                _ => r as i64,
            });
        }
        for v in values {
            let t = Timestamp(v);
            for (micros, z) in [(true, true), (true, false), (false, true), (false, false)] {
                assert_eq!(iso(t, micros, z), chrono_iso(t, micros, z), "{v}");
            }
        }
    }
}

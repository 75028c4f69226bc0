//! Calendar months in UTC, from Unix milliseconds (monthly quotas reset on the 1st).

const DAY_MS: u64 = 86_400_000;

/// `(year, month 1..=12, day 1..=31)` of a day number counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The month containing `now_ms`, as `"YYYY-MM"`.
pub fn month_key(now_ms: u64) -> String {
    let (y, m, _) = civil_from_days((now_ms / DAY_MS) as i64);
    format!("{y:04}-{m:02}")
}

/// First millisecond of the month containing `now_ms`.
pub fn month_start_ms(now_ms: u64) -> u64 {
    let (y, m, _) = civil_from_days((now_ms / DAY_MS) as i64);
    days_from_civil(y, m, 1) as u64 * DAY_MS
}

/// First millisecond of the month after the one containing `now_ms`.
pub fn next_month_start_ms(now_ms: u64) -> u64 {
    let (y, m, _) = civil_from_days((now_ms / DAY_MS) as i64);
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) as u64 * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-28T13:54:33Z
    const NOW: u64 = 1_795_874_073_000;

    #[test]
    fn months_start_and_end_where_the_calendar_says() {
        assert_eq!(month_key(NOW), "2026-11");
        assert_eq!(month_start_ms(NOW), 1_793_491_200_000); // 2026-11-01
        assert_eq!(next_month_start_ms(NOW), 1_796_083_200_000); // 2026-12-01
        assert_eq!(month_key(0), "1970-01");
        assert_eq!(next_month_start_ms(0), 31 * DAY_MS);
        // December rolls into the next year; February 2028 has 29 days.
        let dec = 1_796_083_200_000 + 5 * DAY_MS;
        assert_eq!(next_month_start_ms(dec), 1_798_761_600_000); // 2027-01-01
        let feb_2028 = days_from_civil(2028, 2, 10) as u64 * DAY_MS;
        assert_eq!(
            next_month_start_ms(feb_2028) - month_start_ms(feb_2028),
            29 * DAY_MS
        );
    }

    #[test]
    fn every_day_for_years_maps_back_to_itself() {
        for days in 0..20_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}

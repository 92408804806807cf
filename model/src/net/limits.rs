//! Bandwidth limits of a port or of a network's aggregate.

use serde::{Deserialize, Serialize};

/// One direction's limit. Rates are bits per second at layer 2 (frame bytes × 8), as tc counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub rate_bps: u64,
    /// Bytes that may pass at line rate before shaping starts; `None`: about 10 ms of `rate`
    /// (and at least one MTU-sized frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_bytes: Option<u64>,
}

/// Limits seen from the guest: `egress` is what the guest sends, `ingress` what it receives.
/// `None` in a direction: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Rate>,
    /// Enforce `egress` by policing at the port's ingress (frames over the rate are dropped)
    /// instead of shaping it through an IFB device (frames over the rate are queued). Policing
    /// costs no extra device and is what some operators expect; shaping is kinder to TCP.
    #[serde(default, skip_serializing_if = "is_false")]
    pub police: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The smallest rate Cairn sets: below this tc's timer granularity makes shaping erratic.
pub const MIN_RATE_BPS: u64 = 8_000;
/// 100 Gbit/s: above any NIC these hosts carry; larger is a typo.
pub const MAX_RATE_BPS: u64 = 100_000_000_000;

impl Rate {
    /// Checks the range; the error names the field (`egress.rate_bps`) and the allowed range.
    pub fn validate(&self, field: &str) -> Result<(), String> {
        if !(MIN_RATE_BPS..=MAX_RATE_BPS).contains(&self.rate_bps) {
            return Err(format!(
                "{field}.rate_bps = {} is out of range: {MIN_RATE_BPS}..={MAX_RATE_BPS} bit/s",
                self.rate_bps
            ));
        }
        if let Some(b) = self.burst_bytes
            && !(1514..=1 << 30).contains(&b)
        {
            return Err(format!(
                "{field}.burst_bytes = {b} is out of range: 1514..=1073741824 bytes"
            ));
        }
        Ok(())
    }

    /// The burst in bytes: as given, or 10 ms of the rate, at least one full frame.
    pub fn burst_or_default(&self) -> u64 {
        self.burst_bytes
            .unwrap_or_else(|| (self.rate_bps / 8 / 100).max(1514))
    }
}

impl Limits {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = &self.egress {
            r.validate("egress")?;
        }
        if let Some(r) = &self.ingress {
            r.validate("ingress")?;
        }
        Ok(())
    }
}

/// A change of limits (`net.setLimits`): only the members given change, as with `ct.set`; a
/// direction given with `rate_bps` 0 becomes unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub police: Option<bool>,
}

impl LimitsChange {
    /// At least one member; each rate in range, or 0 (unlimited) without a burst.
    pub fn validate(&self) -> Result<(), String> {
        if *self == LimitsChange::default() {
            return Err(
                "no member given; expected egress, ingress or police (rate_bps 0 removes a \
                 direction's limit)"
                    .into(),
            );
        }
        for (field, rate) in [("egress", &self.egress), ("ingress", &self.ingress)] {
            match rate {
                Some(Rate {
                    rate_bps: 0,
                    burst_bytes: Some(_),
                }) => {
                    return Err(format!(
                        "{field}.burst_bytes needs a rate; rate_bps 0 removes the limit"
                    ));
                }
                Some(r) if r.rate_bps != 0 => r.validate(field)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// `old` with this change made; None when nothing is limited any more.
    pub fn apply(&self, old: Option<Limits>) -> Option<Limits> {
        let old = old.unwrap_or_default();
        let pick = |given: Option<Rate>, had: Option<Rate>| match given {
            Some(r) if r.rate_bps == 0 => None,
            Some(r) => Some(r),
            None => had,
        };
        let new = Limits {
            egress: pick(self.egress, old.egress),
            ingress: pick(self.ingress, old.ingress),
            police: self.police.unwrap_or(old.police),
        };
        (new != Limits::default()).then_some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_touches_only_what_it_names() {
        let rate = |bps| Rate {
            rate_bps: bps,
            burst_bytes: None,
        };
        let old = Limits {
            egress: Some(rate(10_000_000)),
            ingress: Some(rate(20_000_000)),
            police: true,
        };
        let only_ingress = LimitsChange {
            ingress: Some(rate(30_000_000)),
            ..LimitsChange::default()
        };
        assert_eq!(
            only_ingress.apply(Some(old)),
            Some(Limits {
                ingress: Some(rate(30_000_000)),
                ..old
            })
        );
        let clear_egress = LimitsChange {
            egress: Some(rate(0)),
            ..LimitsChange::default()
        };
        assert_eq!(
            clear_egress.apply(Some(old)),
            Some(Limits {
                egress: None,
                ..old
            })
        );
        let clear_all = LimitsChange {
            egress: Some(rate(0)),
            ingress: Some(rate(0)),
            police: Some(false),
        };
        assert_eq!(clear_all.apply(Some(old)), None);
        assert_eq!(
            only_ingress.apply(None).and_then(|l| l.ingress),
            Some(rate(30_000_000))
        );
        assert!(
            LimitsChange::default()
                .validate()
                .unwrap_err()
                .contains("no member")
        );
        assert_eq!(clear_egress.validate(), Ok(()));
        let bad = LimitsChange {
            egress: Some(Rate {
                rate_bps: 0,
                burst_bytes: Some(2000),
            }),
            ..LimitsChange::default()
        };
        assert!(bad.validate().unwrap_err().contains("egress.burst_bytes"));
        let slow = LimitsChange {
            ingress: Some(rate(10)),
            ..LimitsChange::default()
        };
        assert!(
            slow.validate()
                .unwrap_err()
                .starts_with("ingress.rate_bps = 10")
        );
    }

    #[test]
    fn ranges_are_checked_and_named() {
        let ok = Rate {
            rate_bps: 100_000_000,
            burst_bytes: None,
        };
        assert_eq!(ok.validate("egress"), Ok(()));
        assert_eq!(ok.burst_or_default(), 125_000);
        let slow = Rate {
            rate_bps: 10,
            burst_bytes: None,
        };
        assert!(
            slow.validate("ingress")
                .unwrap_err()
                .starts_with("ingress.rate_bps = 10")
        );
        let tiny = Rate {
            rate_bps: 1_000_000,
            burst_bytes: Some(100),
        };
        assert!(
            tiny.validate("egress")
                .unwrap_err()
                .contains("egress.burst_bytes")
        );
        assert_eq!(
            Rate {
                rate_bps: 10_000_000,
                burst_bytes: None
            }
            .burst_or_default(),
            12_500
        );
        assert_eq!(
            Rate {
                rate_bps: 100_000,
                burst_bytes: None
            }
            .burst_or_default(),
            1514
        );
    }

    #[test]
    fn json_rejects_unknown_fields() {
        let l: Limits = serde_json::from_str(r#"{"egress":{"rate_bps":20000000}}"#).unwrap();
        assert_eq!(l.egress.map(|r| r.rate_bps), Some(20_000_000));
        assert!(serde_json::from_str::<Limits>(r#"{"egres":{}}"#).is_err());
    }
}

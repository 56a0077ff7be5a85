//! The trace sampler: which requests are traced. Kept apart from the set-up because the same
//! decision is made twice, by the SDK's sampler when spans are exported and by hand before any
//! span exists (so an unsampled request builds none), and the two must agree on every trace.

use opentelemetry_sdk::trace::Sampler;

use super::trace_context::{TraceIds, random_trace_id};

#[derive(Debug, Clone, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBased(Box<SamplerConfig>),
}

impl SamplerConfig {
    pub(super) fn build(&self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(*r),
            Self::ParentBased(root) => Sampler::ParentBased(Box::new(root.build())),
        }
    }
}

impl SamplerConfig {
    /// The SDK's decision for a server span, made before any span exists (so an unsampled
    /// request builds none). `TraceIdRatioBased` compares the trace id's low 63 bits with the
    /// ratio, as opentelemetry_sdk 0.33 does, so both agree on every trace.
    pub(super) fn samples(
        &self,
        parent: Option<TraceIds>,
        trace_id: [u8; 16],
        trust_parent: bool,
    ) -> bool {
        match self {
            Self::AlwaysOn => true,
            Self::AlwaysOff => false,
            Self::Ratio(ratio) => {
                let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
                let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes"));
                (low >> 1) < bound
            }
            Self::ParentBased(root) => match parent {
                Some(parent) if trust_parent => parent.sampled,
                // The caller chose the trace id too: draw instead of reading it.
                Some(_) => root.samples(None, random_trace_id(), trust_parent),
                None => root.samples(None, trace_id, trust_parent),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace_context::random_span_id;

    #[test]
    fn the_ratio_sampler_agrees_with_the_sdk() {
        use opentelemetry::trace::{SpanKind, TraceId};
        use opentelemetry_sdk::trace::ShouldSample;
        let sdk = Sampler::TraceIdRatioBased(0.25);
        let ours = SamplerConfig::Ratio(0.25);
        let mut agreed = 0;
        for _ in 0..2000 {
            let trace_id = random_trace_id();
            let sdk_samples = sdk
                .should_sample(
                    None,
                    TraceId::from_bytes(trace_id),
                    "s",
                    &SpanKind::Server,
                    &[],
                    &[],
                )
                .decision
                == opentelemetry_sdk::trace::SamplingDecision::RecordAndSample;
            assert_eq!(ours.samples(None, trace_id, true), sdk_samples);
            agreed += usize::from(sdk_samples);
        }
        assert!(
            (300..700).contains(&agreed),
            "{agreed} of 2000 sampled at 0.25"
        );
        let parent = TraceIds {
            trace_id: random_trace_id(),
            span_id: random_span_id(),
            sampled: false,
        };
        let parent_based = SamplerConfig::ParentBased(Box::new(SamplerConfig::AlwaysOn));
        assert!(!parent_based.samples(Some(parent), parent.trace_id, true));
        assert!(parent_based.samples(None, parent.trace_id, true));
    }

    #[test]
    fn an_untrusted_parent_cannot_force_sampling() {
        let ratio = SamplerConfig::ParentBased(Box::new(SamplerConfig::Ratio(0.0)));
        let forced = TraceIds {
            trace_id: [0; 16],
            span_id: random_span_id(),
            sampled: true,
        };
        assert!(
            ratio.samples(Some(forced), forced.trace_id, true),
            "trusted"
        );
        assert!(
            !ratio.samples(Some(forced), forced.trace_id, false),
            "untrusted"
        );
        let half = SamplerConfig::ParentBased(Box::new(SamplerConfig::Ratio(0.5)));
        // A trace id whose low bits are all zero is sampled by any ratio: an untrusted caller's
        // chosen id must not decide, so about half of 2000 such requests are sampled.
        let sampled = (0..2000)
            .filter(|_| half.samples(Some(forced), forced.trace_id, false))
            .count();
        assert!((800..1200).contains(&sampled), "{sampled} of 2000 at 0.5");
    }
}

//! Model routes: the domain form of an InferenceModel (requested name -> weighted target models).

use std::fmt;

/// How important a model's requests are; Sheddable ones are refused (429) when the pool is saturated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Criticality {
    Critical,
    #[default]
    Standard,
    Sheddable,
}

impl Criticality {
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Critical => "Critical",
            Criticality::Standard => "Standard",
            Criticality::Sheddable => "Sheddable",
        }
    }
}

impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `targetModels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetModel {
    pub name: String,
    pub weight: u32,
}

/// Why a route spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("model name must be 1-256 characters")]
    BadModelName,
    #[error("model {0}: at most 10 targetModels are allowed")]
    TooManyTargets(String),
    #[error("model {0}: weights must be set for all targetModels or for none")]
    MixedWeights(String),
    #[error("model {0}: weight {1} is outside 0..=1000000")]
    WeightOutOfRange(String, u32),
    #[error("model {0}: targetModels weights sum to zero")]
    ZeroWeights(String),
}

/// A validated InferenceModel: requests for `model_name` are served as one of `targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoute {
    model_name: String,
    criticality: Criticality,
    /// Never empty: an InferenceModel without targetModels serves its own name.
    targets: Vec<TargetModel>,
    total_weight: u64,
}

const MAX_TARGETS: usize = 10;
const MAX_WEIGHT: u32 = 1_000_000;

impl ModelRoute {
    /// Validates a spec as the CRD does. `targets` entries carry `None` weight when unset.
    pub fn new(
        model_name: impl Into<String>,
        criticality: Criticality,
        targets: Vec<(String, Option<u32>)>,
    ) -> Result<Self, RouteError> {
        let model_name = model_name.into();
        if model_name.is_empty() || model_name.len() > 256 {
            return Err(RouteError::BadModelName);
        }
        if targets.len() > MAX_TARGETS {
            return Err(RouteError::TooManyTargets(model_name));
        }
        let weighted = targets.iter().filter(|(_, w)| w.is_some()).count();
        if weighted != 0 && weighted != targets.len() {
            return Err(RouteError::MixedWeights(model_name));
        }
        let mut resolved = Vec::with_capacity(targets.len().max(1));
        for (name, weight) in targets {
            let weight = weight.unwrap_or(1);
            if weight > MAX_WEIGHT {
                return Err(RouteError::WeightOutOfRange(model_name, weight));
            }
            resolved.push(TargetModel { name, weight });
        }
        if resolved.is_empty() {
            resolved.push(TargetModel {
                name: model_name.clone(),
                weight: 1,
            });
        }
        let total_weight = resolved.iter().map(|t| u64::from(t.weight)).sum();
        if total_weight == 0 {
            return Err(RouteError::ZeroWeights(model_name));
        }
        Ok(Self {
            model_name,
            criticality,
            targets: resolved,
            total_weight,
        })
    }

    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    pub fn criticality(&self) -> Criticality {
        self.criticality
    }

    pub fn targets(&self) -> &[TargetModel] {
        &self.targets
    }

    /// Weighted pick of a target; `random` is any uniformly distributed u64.
    pub fn pick_target(&self, random: u64) -> &str {
        let mut point = random % self.total_weight;
        for target in &self.targets {
            let w = u64::from(target.weight);
            if point < w {
                return &target.name;
            }
            point -= w;
        }
        // Unreachable: point < total_weight = sum of weights. Fall back to the first target.
        &self.targets[0].name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(targets: &[(&str, Option<u32>)]) -> Result<ModelRoute, RouteError> {
        ModelRoute::new(
            "m",
            Criticality::Standard,
            targets.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
        )
    }

    #[test]
    fn weighted_pick_follows_weights_exactly_over_the_range() {
        let r = route(&[("a", Some(80)), ("b", Some(20))]).unwrap();
        let a = (0..100u64).filter(|i| r.pick_target(*i) == "a").count();
        assert_eq!(a, 80);
    }

    #[test]
    fn validation_table() {
        assert_eq!(
            route(&[("a", Some(1)), ("b", None)]),
            Err(RouteError::MixedWeights("m".into()))
        );
        assert_eq!(
            route(&[("a", Some(0)), ("b", Some(0))]),
            Err(RouteError::ZeroWeights("m".into()))
        );
        assert_eq!(
            route(&[("a", Some(2_000_000))]),
            Err(RouteError::WeightOutOfRange("m".into(), 2_000_000))
        );
        let many: Vec<_> = (0..11).map(|_| ("x", None)).collect();
        assert!(matches!(route(&many), Err(RouteError::TooManyTargets(_))));
        let uniform = route(&[("a", None), ("b", None)]).unwrap();
        assert_eq!(uniform.pick_target(0), "a");
        assert_eq!(uniform.pick_target(1), "b");
        let bare = route(&[]).unwrap();
        assert_eq!(bare.pick_target(7), "m");
    }
}

//! What happened, as plain values: why an episode ended and the outcome of one step.

/// Why an episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum EndReason {
    #[default]
    Running,
    RouteCompleted,
    TimeLimit,
    CollisionVehicle,
    CollisionStatic,
    OffRoad,
    RedLight,
    Blocked,
    /// The plan or the vehicle state stopped being finite numbers (a NaN or infinite
    /// waypoint, or a state the dynamics could not represent): the planner is broken.
    NonFinite,
}

impl EndReason {
    /// Termination (no bootstrapping) as opposed to truncation.
    pub fn is_termination(self) -> bool {
        matches!(
            self,
            EndReason::CollisionVehicle
                | EndReason::CollisionStatic
                | EndReason::OffRoad
                | EndReason::RedLight
                | EndReason::Blocked
                | EndReason::NonFinite
        )
    }
}

/// Result of one step of one world.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepResult {
    pub reward: f32,
    pub end: EndReason,
}

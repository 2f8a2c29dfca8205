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

/// What one step of one world produced, as the world measured it: the only input of the
/// reward (`reward::compute`), so a reward can be tested, and changed, without a world.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepEvents {
    /// How the episode ended this step, or `Running`.
    pub end: EndReason,
    /// Route metres gained this step (best progress after minus before; never negative).
    pub progress_gain: f32,
    /// Length of the route, metres.
    pub route_length: f32,
    /// Ego speed after the step, m/s.
    pub speed: f32,
    /// Speed limit of the route lane at the ego's position, m/s.
    pub speed_limit: f32,
    /// nuPlan comfort bounds violated by this step's raw motion (bits in the order of
    /// `metrics::nuplan_comfort::NAMES`).
    pub comfort_violations: u8,
    /// Whether the motion fails nuPlan's comfort check on the filtered quantities the episode
    /// metric uses (window means and slopes; one such step fails the episode's comfort).
    pub comfort_flagged: bool,
    /// Whether the ego box pokes out of the route lane (by more than 0.3 m).
    pub outside_lane: bool,
    /// Bumper-to-bumper gap to the vehicle or obstacle ahead on the route, metres (near a
    /// merge also the merging road's traffic mapped onto the route, negative while abreast);
    /// infinite when none is within range or the reward does not look (`ttc_threshold` 0).
    pub lead_gap: f32,
    /// That leader's speed along the route, m/s (0 when none).
    pub lead_speed: f32,
}

impl StepEvents {
    /// The step that ends an episode on a plan or state that is not finite: nothing driven, no
    /// progress, so the reward is the terminal penalty alone.
    pub fn non_finite(route_length: f32, speed: f32, speed_limit: f32) -> Self {
        StepEvents {
            end: EndReason::NonFinite,
            progress_gain: 0.0,
            route_length,
            speed,
            speed_limit,
            comfort_violations: 0,
            comfort_flagged: false,
            outside_lane: false,
            lead_gap: f32::INFINITY,
            lead_speed: 0.0,
        }
    }
}

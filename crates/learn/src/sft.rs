//! The SFT (behaviour-cloned) planner ([`planner`]: architecture, normalisation, inference,
//! checkpoints, the frozen-planner implementation) and its training ([`train`]: behaviour
//! cloning, validation, the loss).

pub mod planner;
pub mod train;

pub use planner::{
    SftArch, SftPlanner, SftWorkspace, ACT_SCALE_FLOOR, OBS_CLIP, OBS_STD_FLOOR, PLAN_CHUNK_ROWS,
    SFT_KIND, SFT_SCHEMA_VERSION,
};
pub use train::{
    evaluate, train_sft, EpochStats, EvalStats, LrSchedule, SftLoss, SftReport, SftTrainConfig,
};

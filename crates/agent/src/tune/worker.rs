//! Many workers, one study: [`work`] runs one worker of a study kept in a
//! [`PostgresStore`]. Start it on as many machines as wanted, with the same database URL and
//! study name; the first creates the study, the others join it (the stored configuration
//! wins). See docs/scaling-out.md.
//!
//! A worker loops: it [claims](PostgresStore::claim) a trial — a running trial whose owner's
//! heartbeat is older than the timeout first (a dead worker's: it is continued from its last
//! checkpoint, as [`resume`](super::resume) does), else a new trial id while the study's
//! budgets (wall clock, and the trial count if set) allow — trains it, and records it. With
//! nothing to claim while other workers' trials are still running it waits and asks again (one
//! of them may die); with nothing running it tests the study's best trial, as every worker
//! does, and writes the same outputs as [`tune`](super::tune) to its own output directory.
//!
//! Strategies: `fixed`, `random`, `asha`, `rl`, `rl-no-width`, `tpe` and `tpe-multivariate`. Under `asha` a trial trains
//! to its next rung and is paused there (checkpointed, status `paused`); a claim promotes a
//! paused trial — any worker's — that is in the top ⅓ of the highest rung that has one, as the
//! single-process `asha` does ([`PostgresStore::promotable`]: ranked in memory from the
//! study's rung results, of which each claim reads only those changed since the last); when
//! nothing runs and nothing may start or be promoted, the paused trials left are closed as
//! `stopped`, up to [`CLOSE_BATCH`](crate::store::postgres::CLOSE_BATCH) to a claim. Under `rl` and `rl-no-width` a trial that reaches ⅑
//! or ⅓ of its rows is judged there at once against the finished trials' results at that rung
//! ([`rung_stops`]) and ends as `stopped` or goes on. The learning strategies share one policy:
//! each finished trial's actor–critic updates (one per decision, replayed in order) are
//! applied to the latest stored state in the transaction that records the trial
//! ([`StudyStore::finish_trial_merging`]), so updates from all workers are applied one after
//! the other in commit order (none is lost), and a worker reloads the state before each trial
//! it starts (and acts with it plus its trial's decisions so far). An update is computed from
//! an episode that was acted out with the state of its start, which other workers may have
//! updated since: the
//! policy learns slightly off-policy, by at most the updates committed during one trial (about
//! one per other worker), as asynchronous SGD does. Under `tpe` a worker reads the trials
//! ended since its last claim (any worker's; [`PostgresStore::trials_from`], as the rung
//! results) before it claims a new trial, and draws its start from every trial ended so
//! far: trials still running on other workers do not count (Optuna's TPE does the same
//! with its default `constant_liar=False`). With one worker the starts are those of a
//! single-process `tpe` study (`tpe-multivariate` likewise). Both stop trials at rungs as `rl` does. `pbt` and `pb2`
//! are refused: their exploits copy weights between members time-sliced in one process's
//! memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use tuneforge_loader::{DataDirs, GzCache};
use tuneforge_monitor::Outcome;
use tuneforge_optim::ScheduleConfig;

use super::{
    Clock, ETA, Ended, Output, State, Strategy, StudyLock, TrialRecord, TuneConfig, TuneSummary, finalize,
    parse_study_config, rung_stops, rungs, stop_paused,
};
use crate::data::{Prepared, prepare};
use crate::policy::StudyPolicy;
use crate::run::write_atomic;
use crate::store::postgres::{Claim, Promotion};
use crate::store::{PostgresStore, StudyRow, StudyStore, TrialRow};
use crate::trial::{Trial, TrialContext, TrialStart, unix_now};
use crate::{Error, Result};

/// How a worker takes part in a shared study.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The trial budget of a study this worker creates (`None`: the config's
    /// [`TuneConfig::max_trials`], and if that is `None` too the wall clock only); a study
    /// that exists keeps its own. It is kept in the study's row, not in its stored config.
    pub max_trials: Option<u64>,
    /// How long to wait before asking again when only other workers' trials are running.
    pub poll: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions { max_trials: None, poll: Duration::from_millis(500) }
    }
}

/// What one worker shares with its trials.
struct Worker<'a> {
    config: &'a TuneConfig,
    data: &'a Prepared,
    device: &'a Device,
    events: PathBuf,
    schedule: ScheduleConfig,
    store: &'a mut PostgresStore,
    elapsed: &'a dyn Fn() -> f64,
    /// The policy a study starts from (before any trial's update is stored).
    prior: StudyPolicy,
    /// The finished trials' rung results read so far (`rl`, `rl-no-width` and `tpe`).
    rung_results: RungResults,
    /// Seconds in the store besides the trials' own writes ([`TuneSummary::worker_store_seconds`]).
    store_seconds: f64,
    /// Why the study ends by its early-stopping rule, once read as met ([`Worker::poll_rule`]).
    met: Option<Ended>,
    /// When the rule was last read.
    rule_read: Option<Instant>,
}

/// How often a worker reads the study's early-stopping rule while a trial trains.
const RULE_POLL: Duration = Duration::from_secs(1);

/// Runs `f`, adding its wall time to `seconds`.
fn timed<T>(seconds: &mut f64, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    *seconds += t.elapsed().as_secs_f64();
    out
}

/// The validation macro-F1 at each rung of every finished trial (`completed`, `stopped` or
/// failed) that a worker has read, kept so that a rung check reads only the trials from the
/// lowest one that was still running or paused at the last read (`from`): a finished trial
/// never changes, and trial ids are given out in the order their claims commit. A check
/// thus costs the trials that ended during about one trial, not the whole study (reading
/// every trial's record, a one-worker digits study fell from 891 to 462 trials per 30 s in
/// 3 minutes; see docs/benchmarks.md).
#[derive(Debug, Default)]
struct RungResults {
    /// Every trial below this id has ended and been read.
    from: u64,
    /// Trial ids read as ended at or above `from` (below it, every trial was).
    seen: std::collections::BTreeSet<u64>,
    /// `by_rung[k]`: the F1 at rung `k` of every ended trial read that reached it.
    by_rung: Vec<Vec<f64>>,
    /// Whether to keep the records read in `fresh` (`tpe`).
    keep: bool,
    /// The records of the trials read as ended, kept (when `keep`) until taken.
    fresh: Vec<TrialRecord>,
}

impl RungResults {
    /// Takes in `rows`, every trial whose id is `from` or more.
    fn absorb(&mut self, rows: &[TrialRow]) {
        let mut open = None;
        for row in rows {
            if row.status == "running" || row.status == "paused" {
                open.get_or_insert(row.id);
                continue;
            }
            if row.id < self.from || !self.seen.insert(row.id) {
                continue;
            }
            // A record that does not parse has no rung results to give (as before).
            let Ok(record) = serde_json::from_str::<TrialRecord>(&row.record) else { continue };
            for (k, &f1) in record.rungs.iter().enumerate() {
                if self.by_rung.len() <= k {
                    self.by_rung.resize_with(k + 1, Vec::new);
                }
                self.by_rung[k].push(f1);
            }
            if self.keep {
                self.fresh.push(record);
            }
        }
        self.from = open.unwrap_or_else(|| rows.last().map_or(self.from, |r| r.id + 1));
        let from = self.from;
        self.seen.retain(|&id| id >= from);
    }

    /// The F1 at rung `k` of the ended trials read.
    fn at(&self, k: usize) -> &[f64] {
        self.by_rung.get(k).map_or(&[], Vec::as_slice)
    }
}

impl Worker<'_> {
    fn ctx(&mut self) -> TrialContext<'_> {
        TrialContext {
            data: self.data,
            source: &self.config.data,
            device: self.device,
            env: &self.config.env,
            events: &self.events,
            progress: self.config.progress,
            log_steps_every: self.config.log_steps_every,
            checkpoint_every: self.config.checkpoint_every,
            schedule: self.schedule.clone(),
            val_fraction: self.config.val_fraction,
            store: &mut *self.store,
            elapsed: self.elapsed,
        }
    }

    /// Whether the study is over for this worker: its wall-clock budget spent, a stop asked
    /// for, or its early-stopping rule met (as last read, [`Worker::poll_rule`]).
    fn over(&self) -> bool {
        (self.elapsed)() >= self.config.budget.as_secs_f64() || self.config.stop.requested() || self.met.is_some()
    }

    /// Reads whether the trials ended so far, by any worker, meet the study's early-stopping
    /// rule ([`TuneConfig::stop_when`]; one query, only when the study has one and it was not
    /// met yet): before each claim (`now`), and while a trial trains at most every
    /// [`RULE_POLL`], so that a trial stops at its next decision point once another worker's
    /// trial has met the rule, as a single-process study's trials do.
    fn poll_rule(&mut self, now: bool) -> Result<()> {
        if self.met.is_some() || self.config.stop_when.is_none() {
            return Ok(());
        }
        if !now && self.rule_read.is_some_and(|t| t.elapsed() < RULE_POLL) {
            return Ok(());
        }
        self.rule_read = Some(Instant::now());
        let (best, after) = timed(&mut self.store_seconds, || self.store.best_and_ended_after())?;
        self.met = self.config.stop_when.met(best.map(|(id, f1)| (f1, id)), after);
        Ok(())
    }

    /// The stored policy, or the prior before the first update.
    fn latest_policy(&mut self) -> Result<StudyPolicy> {
        match timed(&mut self.store_seconds, || self.store.policy())? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| Error::Config { what: "study store", why: format!("policy state: {e}") }),
            None => Ok(self.prior.clone()),
        }
    }

    /// Trains `trial` to its end (or the budget's) and records it; under ASHA, to its next
    /// rung, where it is paused (checkpointed, status `paused`) unless it is done.
    fn handle(&mut self, st: &mut State<'_>, trial: &mut Trial) -> Result<()> {
        // The policy this worker merged last is in `st.policy`; read it again only when
        // another worker may have merged since.
        if st.config.strategy.learns() && !self.store.merged_policy_is_latest() {
            st.policy = self.latest_policy()?;
        }
        // rl, rl-no-width and tpe stop a trial at a rung where it is not in the top third.
        let judged = st.config.strategy.stops_at_rungs();
        let asha = st.config.strategy == Strategy::Asha;
        let targets = rungs(self.config.env.budget_steps);
        loop {
            let rung = trial.tally.rungs.len().min(targets.len() - 1);
            let at_rung = asha || (judged && rung < targets.len() - 1);
            let until = at_rung.then_some(targets[rung]);
            loop {
                if trial.env.done() || until.is_some_and(|u| trial.env.steps() >= u) || st.ends_early(trial) {
                    break;
                }
                self.poll_rule(false)?;
                if self.over() {
                    break;
                }
                let (action, secs) = st.choose(trial);
                if let Err(e) = self.ctx().step(trial, action, secs) {
                    if !e.ends_only_the_trial() {
                        return Err(e);
                    }
                    tracing::warn!(trial = trial.id, error = %e, "trial failed");
                    let row = self.ctx().fail(trial, &e)?;
                    st.push(trial.record(&row.status));
                    return Ok(());
                }
            }
            if !at_rung || trial.env.steps() < targets[rung] {
                break;
            }
            let f1 = trial.env.observe().val_f1;
            trial.tally.rungs.push(f1);
            if asha {
                if !trial.env.done() && !self.over() && !st.ends_early(trial) {
                    // Paused at its rung: any worker may promote it from this checkpoint.
                    self.ctx().checkpoint(trial, "paused")?;
                    trial.env.run_mut().finish_monitor(Outcome::Stopped)?;
                    return Ok(());
                }
                break;
            }
            if self.over() || st.ends_early(trial) || rung_stops(self.rung_results(rung)?, f1) {
                break;
            }
        }
        // As TrialContext::finish, with the policy update merged into the latest stored state.
        let f1 = trial.env.observe().val_f1;
        let keep = timed(&mut self.store_seconds, || self.store.best_trial())?.is_none_or(|(_, best)| f1 > best);
        let done = trial.env.done();
        let status = if done { "completed" } else { "stopped" };
        // The final checkpoint is written with the trial still running, and another's is
        // deleted only after the trial is recorded: a worker that dies in between leaves a
        // running trial that the next worker finishes from its final state (its policy update
        // included), never a finished trial without its update, nor one to train again.
        if keep {
            self.ctx().checkpoint(trial, "running")?;
        }
        if !done {
            trial.tally.reward += f1;
        }
        trial.env.run_mut().finish_monitor(if done { Outcome::Completed } else { Outcome::Stopped })?;
        let mut row = trial.row(status);
        row.ended_unix = Some(unix_now());
        let elapsed = (self.elapsed)();
        if st.config.strategy.learns() {
            let (prior, episode) = (&self.prior, &trial.tally.episode);
            let stopped_at = (!done).then(|| trial.env.observe());
            let mut merged = None;
            // The merge's own work (the policy update) is the agent's, not the store's.
            let mut learning = 0.0;
            let t = Instant::now();
            self.store.finish_trial_merging(
                &row,
                &mut |latest| {
                    let t = Instant::now();
                    let mut policy: StudyPolicy = match latest {
                        Some(json) => serde_json::from_str(json).map_err(|e| e.to_string())?,
                        None => prior.clone(),
                    };
                    policy.learn_episode(episode, stopped_at);
                    let json = serde_json::to_string(&policy).map_err(|e| e.to_string())?;
                    merged = Some(policy);
                    learning += t.elapsed().as_secs_f64();
                    Ok(json)
                },
                elapsed,
            )?;
            self.store_seconds += (t.elapsed().as_secs_f64() - learning).max(0.0);
            if let Some(policy) = merged {
                st.policy = policy;
            }
        } else {
            timed(&mut self.store_seconds, || self.store.finish_trial(&row, None, elapsed))?;
        }
        timed(&mut self.store_seconds, || {
            if keep { self.store.prune_checkpoints().map(drop) } else { self.store.delete_checkpoint(trial.id) }
        })?;
        st.push(trial.record(status));
        Ok(())
    }

    /// The validation macro-F1 at rung `k` of every finished trial (for [`rung_stops`]; the
    /// asking trial is running, so not among them), reading only the trials the worker's
    /// [`RungResults`] has not seen end.
    fn rung_results(&mut self, k: usize) -> Result<&[f64]> {
        let from = self.rung_results.from;
        let rows = timed(&mut self.store_seconds, || self.store.trials_from(from))?;
        self.rung_results.absorb(&rows);
        Ok(self.rung_results.at(k))
    }

    /// Adds to `st.records` the trials that ended, on any worker, since the last read (for
    /// `tpe`'s next start; rung checks read some of them first), reading only the trials the
    /// worker's [`RungResults`] has not seen end.
    fn read_ended(&mut self, st: &mut State<'_>) -> Result<()> {
        let from = self.rung_results.from;
        let rows = timed(&mut self.store_seconds, || self.store.trials_from(from))?;
        self.rung_results.absorb(&rows);
        for record in self.rung_results.fresh.drain(..) {
            st.records.insert(record.id, record);
        }
        Ok(())
    }

    /// Ends paused trials as `stopped` from their rows (each one's final validation macro-F1
    /// added to its reward), as the single-process ASHA ends the trials still paused at its
    /// end: in one transaction, then one deletion of the checkpoints no longer needed.
    fn close(&mut self, st: &mut State<'_>, rows: Vec<TrialRow>) -> Result<()> {
        let mut records = Vec::with_capacity(rows.len());
        let mut ended = Vec::with_capacity(rows.len());
        for row in rows {
            let (record, row) = stop_paused(row)?;
            ended.push(row);
            records.push(record);
        }
        let elapsed = (self.elapsed)();
        timed(&mut self.store_seconds, || self.store.finish_trials(&ended, elapsed))?;
        timed(&mut self.store_seconds, || self.store.prune_checkpoints().map(drop))?;
        for record in records {
            st.push(record);
        }
        Ok(())
    }

    /// The trial of a claimed row, continued from its checkpoint (`takeover`: its worker
    /// stopped beating; else a paused trial promoted); `None` when another worker took it
    /// over meanwhile or it could not be restored (then recorded as failed).
    fn restore_claimed(&mut self, st: &mut State<'_>, row: &TrialRow, takeover: bool) -> Result<Option<Trial>> {
        match self.ctx().restore(row, takeover) {
            Ok(t) => Ok(Some(t)),
            Err(e @ Error::TakenOver { .. }) => {
                tracing::warn!(trial = row.id, error = %e, "dropped a trial another worker took over");
                Ok(None)
            }
            Err(e) if !e.ends_only_the_trial() => Err(e),
            Err(e) => {
                let start: TrialStart = serde_json::from_str(&row.config).unwrap_or_else(|_| st.sample_start(row.id));
                self.failed_start(st, row.id, start, row.started_unix, &e)?;
                Ok(None)
            }
        }
    }

    /// Records a trial that could not start or be restored as failed.
    fn failed_start(
        &mut self,
        st: &mut State<'_>,
        id: u64,
        start: TrialStart,
        started_unix: f64,
        e: &Error,
    ) -> Result<()> {
        tracing::warn!(trial = id, error = %e, "trial failed to start");
        let record = TrialRecord::unstarted(id, &start, &format!("failed: {e}"));
        let mut row = pending_row(&record, started_unix);
        row.ended_unix = Some(unix_now());
        self.store.delete_checkpoint(id)?;
        let elapsed = (self.elapsed)();
        self.store.finish_trial(&row, None, elapsed)?;
        st.push(record);
        Ok(())
    }
}

/// The row a new trial is claimed with (before its first interval is trained).
fn pending_row(record: &TrialRecord, started_unix: f64) -> TrialRow {
    TrialRow {
        id: record.id,
        status: record.status.clone(),
        config: serde_json::to_string(&record.start).expect("start serialises"),
        record: serde_json::to_string(record).expect("record serialises"),
        val_macro_f1: None,
        samples_per_s: None,
        reward: 0.0,
        decisions: 0,
        resumed: false,
        started_unix,
        updated_unix: unix_now(),
        ended_unix: None,
        pid: std::process::id(),
    }
}

/// Runs one worker of the study `store` names (created from `config` if it does not exist,
/// else joined with its stored configuration; see the [module docs](self)) until the study is
/// done, then writes `events.jsonl` (this worker's trials), `summary.json` (every trial of the
/// study), the best model, `prep.json`, `predictions.csv` and, for the learning strategies,
/// `policy.json` to `out` (one directory per worker: two workers cannot share one).
/// `on_trial` sees each trial this worker finishes.
#[allow(clippy::too_many_arguments)]
pub fn work(
    config: &TuneConfig,
    store: &mut PostgresStore,
    options: &WorkerOptions,
    dirs: &DataDirs,
    cache: &GzCache,
    device: &Device,
    out: &Path,
    on_trial: &mut dyn FnMut(&TrialRecord),
) -> Result<TuneSummary> {
    let refuse = |strategy: Strategy| -> Result<()> {
        if matches!(strategy, Strategy::Pbt | Strategy::Pb2) {
            return Err(Error::Config {
                what: "strategy",
                why: format!(
                    "{strategy} cannot be shared by several workers (its exploits copy weights between members \
                     time-sliced in one process); with --storage postgres://... use fixed, random, asha, rl, \
                     rl-no-width, tpe or tpe-multivariate, or run {strategy} with SQLite storage"
                ),
            });
        }
        Ok(())
    };
    refuse(config.strategy)?;
    let max_trials = options.max_trials.or(config.max_trials);
    super::check_limits(max_trials, config.trial_timeout, &config.stop_when)?;
    super::check_enqueued(&config.enqueued, &config.env.bounds)?;
    // A worker about to create the study checks the data and the starting model first: a
    // study is not created for data that cannot be read or a model that cannot take it. (One
    // joining a study takes its stored settings, whatever its own flags say.)
    let mut data = None;
    if store.study()?.is_none() {
        let mine = prepare(&config.data, dirs, cache, config.val_fraction, config.seed)?;
        super::check_model(config, &mine)?;
        data = Some(mine);
    }
    let mine = StudyRow {
        config: super::study_config_json(&TuneConfig { max_trials: None, ..config.clone() }),
        strategy: config.strategy.name().into(),
        dataset: config.data.to_string(),
        seed: config.seed,
        budget_s: config.budget.as_secs_f64(),
        elapsed_s: 0.0,
        created_unix: unix_now(),
    };
    let (stored, max_trials) = store.create_or_join(&mine, max_trials)?;
    let joined;
    let config = if stored.config == mine.config {
        config
    } else {
        // The study's own configuration, its starting policy included, whatever this
        // worker was given.
        let c = parse_study_config(
            &stored.config,
            Output { progress: config.progress, log_steps_every: config.log_steps_every, stop: config.stop.clone() },
        )?;
        refuse(c.strategy)?;
        if (&c.data, c.val_fraction, c.seed) != (&config.data, config.val_fraction, config.seed) {
            data = None;
        }
        let json = |p: &Option<StudyPolicy>| serde_json::to_string(p).expect("policy serialises");
        if config.policy.is_some() && json(&config.policy) != json(&c.policy) {
            tracing::warn!(study = store.study_name(), "--policy ignored: the study keeps the policy it started from");
        }
        tracing::info!(study = store.study_name(), "joined the study with its stored configuration");
        joined = c;
        &joined
    };
    // The study's trial budget is kept beside its configuration, not in it.
    let budgeted;
    let config = if config.max_trials == max_trials {
        config
    } else {
        budgeted = TuneConfig { max_trials, ..config.clone() };
        &budgeted
    };
    let data = match data {
        Some(data) => data,
        None => prepare(&config.data, dirs, cache, config.val_fraction, config.seed)?,
    };
    super::check_model(config, &data)?;
    tracing::info!(study = store.study_name(), worker = store.worker(), ?max_trials, "worker started");
    std::fs::create_dir_all(out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?;
    let _lock = StudyLock::acquire(out)?;
    let clock = Clock { offset: stored.elapsed_s, start: Instant::now() };
    let elapsed = || clock.elapsed();
    let target = format!("{} (study {})", store.target(), store.study_name());
    let prior = config.starting_policy();
    prior.validate().map_err(|why| Error::Config { what: "policy", why })?;
    let mut st = State {
        config,
        policy: prior.clone(),
        best: None,
        records: BTreeMap::new(),
        next_id: 0,
        on_trial,
        budget_s: config.budget.as_secs_f64(),
        ended_after_best: 0,
        converged: None,
    };
    let mut w = Worker {
        config,
        data: &data,
        device,
        events: out.join("events.jsonl"),
        schedule: if config.cosine {
            ScheduleConfig::Cosine { total_steps: config.env.budget_steps, warmup_steps: 0, min_lr: 0.0 }
        } else {
            ScheduleConfig::Constant
        },
        store,
        elapsed: &elapsed,
        prior,
        rung_results: RungResults { keep: config.strategy.tpe_mode().is_some(), ..RungResults::default() },
        store_seconds: 0.0,
        met: None,
        rule_read: None,
    };
    loop {
        // Stopped (Ctrl-C, `TuneConfig::stop`): this worker's trial ended as `stopped`; it
        // claims nothing more.
        if config.stop.requested() {
            break;
        }
        w.poll_rule(true)?;
        st.converged = w.met.clone();
        let allow_new = !w.over();
        if allow_new && config.strategy.tpe_mode().is_some() {
            w.read_ended(&mut st)?;
        }
        let now = unix_now();
        // The start drawn for a new trial (in the claim's transaction), and how long drawing it
        // took (a `tpe` start is the agent's work).
        let mut drawn: Option<(u64, TrialStart, f64)> = None;
        let claim = {
            let st = &st;
            let mut new_row = |id| {
                let t = Instant::now();
                let start = st.sample_start(id);
                let row = pending_row(&TrialRecord::unstarted(id, &start, "running"), now);
                drawn = Some((id, start, t.elapsed().as_secs_f64()));
                row
            };
            let promote = (config.strategy == Strategy::Asha && allow_new)
                .then(|| Promotion { rungs: rungs(config.env.budget_steps).len(), eta: ETA });
            timed(&mut w.store_seconds, || w.store.claim(allow_new, &mut new_row, promote))?
        };
        let mut trial = match claim {
            Claim::Done => break,
            Claim::Wait => {
                std::thread::sleep(options.poll);
                continue;
            }
            Claim::New(id) => {
                let (start, choosing) = match drawn {
                    Some((drawn_id, start, seconds)) if drawn_id == id => (start, seconds),
                    _ => (st.sample_start(id), 0.0),
                };
                match w.ctx().start(id, start.clone()) {
                    Ok(mut t) => {
                        t.tally.agent_seconds += choosing;
                        t
                    }
                    Err(e @ Error::TakenOver { .. }) => {
                        tracing::warn!(trial = id, error = %e, "dropped a trial another worker took over");
                        continue;
                    }
                    Err(e) if !e.ends_only_the_trial() => return Err(e),
                    Err(e) => {
                        w.failed_start(&mut st, id, start, now, &e)?;
                        continue;
                    }
                }
            }
            Claim::Close(rows) => {
                match w.close(&mut st, rows) {
                    Ok(()) => {}
                    Err(e @ Error::TakenOver { .. }) => {
                        tracing::warn!(error = %e, "dropped paused trials another worker claimed");
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            Claim::Promote(row) => {
                tracing::debug!(trial = row.id, "promoting a paused trial");
                match w.restore_claimed(&mut st, &row, false)? {
                    Some(t) => t,
                    None => continue,
                }
            }
            Claim::TakeOver(row) => {
                tracing::info!(trial = row.id, "taking over a trial whose worker stopped beating");
                match w.restore_claimed(&mut st, &row, true)? {
                    Some(t) => t,
                    None => continue,
                }
            }
        };
        match w.handle(&mut st, &mut trial) {
            Ok(()) => {}
            Err(e @ Error::TakenOver { .. }) => {
                tracing::warn!(trial = trial.id, error = %e, "dropped a trial another worker took over");
                trial.env.run_mut().finish_monitor(Outcome::Aborted).ok();
            }
            Err(e) => return Err(e),
        }
    }
    st.policy = w.latest_policy()?;
    // Every worker reports the whole study. The best first, then the trials: other workers
    // may still be finishing trials, and a trial that has ended stays ended, so the best read
    // first is among the trials read after it (read the other way round, a trial that ended
    // in between was the best and had no record). A better trial that ends on another worker
    // before the best's checkpoint is read has that checkpoint deleted (only the best's is
    // kept): then the best has changed, and the study is read again.
    let mut attempts = 0;
    let mut summary = loop {
        st.best = w.store.best_trial()?.map(|(id, f1)| (f1, id));
        st.records.clear();
        for row in w.store.trials()? {
            if row.status == "running" || row.status == "paused" {
                continue;
            }
            let record: TrialRecord = serde_json::from_str(&row.record)
                .map_err(|e| Error::Config { what: "study store", why: format!("trial {}: record: {e}", row.id) })?;
            st.records.insert(row.id, record);
        }
        st.recount();
        st.check_converged();
        // (finalize records the elapsed time.)
        match finalize(&mut w.ctx(), &st, out, 0, &elapsed) {
            Err(e) if attempts < 5 && w.store.best_trial()?.map(|(id, f1)| (f1, id)) != st.best => {
                attempts += 1;
                tracing::info!(error = %e, "the best trial changed while this worker reported the study; reading it again");
            }
            result => break result?,
        }
    };
    summary.study_path = PathBuf::from(target);
    summary.worker_store_seconds = Some(w.store_seconds);
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    write_atomic(&out.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn row(id: u64, status: &str, rungs: &[f64]) -> TrialRow {
        let start = TrialStart { model: "mlp:64".into(), lr: 1e-3, batch_size: 32, seed: id };
        let record = TrialRecord { rungs: rungs.to_vec(), ..TrialRecord::unstarted(id, &start, status) };
        pending_row(&record, 0.0)
    }

    /// What a rung check saw before [`RungResults`]: every ended trial's rung `k`, from all rows.
    fn full_scan(rows: &[TrialRow], k: usize) -> Vec<f64> {
        let mut out: Vec<f64> = rows
            .iter()
            .filter(|r| r.status != "running" && r.status != "paused")
            .filter_map(|r| serde_json::from_str::<TrialRecord>(&r.record).ok()?.rungs.get(k).copied())
            .collect();
        out.sort_by(f64::total_cmp);
        out
    }

    #[test]
    fn rung_results_and_ended_records_read_incrementally_equal_a_full_scan_while_trials_end_out_of_order() {
        // Four workers: trials are claimed in id order and end in any order, some with a
        // record that does not parse; a rung check reads only the rows from `from`.
        let mut rng = StdRng::seed_from_u64(7);
        let mut rows: Vec<TrialRow> = Vec::new();
        // Kept records (`tpe`) are taken at some reads, as `Worker::read_ended` does.
        let mut cache = RungResults { keep: true, ..RungResults::default() };
        let mut taken: BTreeMap<u64, TrialRecord> = BTreeMap::new();
        let mut checks = 0;
        let mut takes = 0;
        for _ in 0..2000 {
            let running: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].status == "running").collect();
            match rng.random_range(0..3) {
                0 if running.len() < 4 => rows.push(row(rows.len() as u64, "running", &[])),
                1 if !running.is_empty() => {
                    let i = running[rng.random_range(0..running.len())];
                    let reached: Vec<f64> = (0..rng.random_range(0..=3)).map(|_| rng.random::<f64>()).collect();
                    let status = ["completed", "stopped", "failed: diverged"][rng.random_range(0..3)];
                    rows[i] = row(i as u64, status, &reached);
                    if rng.random_range(0..20) == 0 {
                        rows[i].record = "{not a record".into();
                    }
                }
                _ => {
                    let from = cache.from;
                    let newer: Vec<TrialRow> = rows.iter().filter(|r| r.id >= from).cloned().collect();
                    cache.absorb(&newer);
                    for k in 0..3 {
                        let mut got = cache.at(k).to_vec();
                        got.sort_by(f64::total_cmp);
                        assert_eq!(got, full_scan(&rows, k), "rung {k} after {} trials", rows.len());
                    }
                    checks += 1;
                    if rng.random_range(0..3) == 0 {
                        // Every ended trial with a record, once, whichever read saw it end.
                        for record in cache.fresh.drain(..) {
                            assert!(taken.insert(record.id, record).is_none(), "a trial taken twice");
                        }
                        let ended: Vec<u64> = rows
                            .iter()
                            .filter(|r| r.status != "running" && r.status != "paused")
                            .filter(|r| serde_json::from_str::<TrialRecord>(&r.record).is_ok())
                            .map(|r| r.id)
                            .collect();
                        assert_eq!(taken.keys().copied().collect::<Vec<_>>(), ended, "after {} trials", rows.len());
                        takes += 1;
                    }
                }
            }
        }
        assert!(checks > 300 && rows.len() > 300, "{checks} checks over {} trials", rows.len());
        assert!(takes > 100, "{takes} takes");
        assert!(cache.at(2).len() > 50, "rung 2 reached by {} ended trials", cache.at(2).len());
        // A check reads from the oldest trial still open: bounded by what is open, not by the
        // study's size.
        let newer: Vec<TrialRow> = rows.iter().filter(|r| r.id >= cache.from).cloned().collect();
        cache.absorb(&newer);
        let open = rows.iter().position(|r| r.status == "running").unwrap_or(rows.len()) as u64;
        assert_eq!(cache.from, open);
        assert!(rows.len() as u64 - cache.from <= 40, "reads from {} of {} trials", cache.from, rows.len());
    }
}

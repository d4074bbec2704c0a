//! wasaga's end-to-end tests, in one test binary (one link, one process to
//! start): each module is a part of the contract, against a real server on
//! 127.0.0.1:0, real SQLite and PostgreSQL, and real components.

mod api;
mod console;
mod contract_v0_2;
mod flow_control;
mod fuzz;
mod hardening;
mod lifecycle;
mod observe;
mod real_steps;
mod redrive;
mod runner;
mod saga_properties;
mod schedules;
mod security;
mod store;
mod telemetry;
mod waits;
mod webhooks;

//! Test support shared by Corral's test suites: [`PgServer`], a real PostgreSQL server from
//! the machine's packages, started by the test itself in a temporary folder.

pub mod postgres;

pub use postgres::PgServer;

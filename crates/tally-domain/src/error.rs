//! Why a command was refused. Every variant maps to one Cloud Controller error at the HTTP edge.

use crate::access::Denial;
use crate::ids::Guid;

/// CC's `OrganizationInvalid` and `SpaceInvalid` messages (`errors/v2.yml`), before the reason.
fn info_invalid(resource: &str) -> &'static str {
    if resource == "organization" {
        "The organization info is invalid:"
    } else {
        "The app space info is invalid:"
    }
}

/// CC's messages for the two refusals of a caller's rights.
fn denial_message(denial: Denial) -> &'static str {
    match denial {
        Denial::InsufficientScope => {
            "Your token lacks the necessary scopes to access this resource."
        }
        Denial::NotAuthorized | Denial::NotFound => {
            "You are not authorized to perform the requested action"
        }
    }
}

/// A business-rule refusal. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// CC `AppNotFound` (100004).
    #[error("The app could not be found: {0}")]
    AppNotFound(Guid),
    /// CC `SpaceNotFound` (40004).
    #[error("The app space could not be found: {0}")]
    SpaceNotFound(Guid),
    /// CC `OrganizationNotFound` (30003).
    #[error("The organization could not be found: {0}")]
    OrgNotFound(Guid),
    /// CC `BuildNotFound`.
    #[error("Build not found: {0}")]
    BuildNotFound(Guid),
    /// CC `AppNameTaken` (100002).
    #[error("The app name is taken: {0}")]
    AppNameTaken(String),
    /// CC `OrganizationNameTaken` (30002).
    #[error("The organization name is taken: {0}")]
    OrgNameTaken(String),
    /// CC `SpaceNameTaken` (40002).
    #[error("The app space name is taken: {0}")]
    SpaceNameTaken(String),
    /// CC `AppInvalid` (100001).
    #[error("The app is invalid: {0}")]
    AppInvalid(String),
    /// CC `AppMemoryInvalid` (100006).
    #[error("You have specified an invalid amount of memory for your application.")]
    AppMemoryInvalid,
    /// CC `AppPackageInvalid` (150001).
    #[error("The app package is invalid: {0}")]
    AppPackageInvalid(String),
    /// CC `DockerImageMissing` (150008).
    #[error("Docker credentials can only be supplied for apps with a 'docker_image'")]
    DockerImageMissing,
    /// CC `NotStaged` (170002).
    #[error("App has not finished staging")]
    NotStaged,
    /// CC `StagingError` (170001).
    #[error("Staging error: {0}")]
    StagingError(String),
    /// CC `AssociationNotEmpty` (10006).
    #[error("Please delete the {association} associations for your {resource}.")]
    AssociationNotEmpty {
        /// What is still there (`spaces`, `apps`).
        association: &'static str,
        /// What was asked to be deleted (`organizations`, `spaces`).
        resource: &'static str,
    },
    /// CC `InvalidRelation` (1002): a role that cannot be given (a space role to a user who is
    /// not a member of the space's org, or a malformed user id).
    #[error("{0}")]
    InvalidRelation(String),
    /// A required attribute is missing (CC `MessageParseError`, 1001).
    #[error("Request invalid due to parse error: Field: {0}, Error: Missing field {0}")]
    MissingField(&'static str),
    /// A name was empty or not printable (CC `*Invalid`).
    #[error("{} name format", info_invalid(.0))]
    InvalidName(&'static str),
    /// A name longer than `limits::NAME` characters (CC `OrganizationInvalid` / `SpaceInvalid`).
    #[error("{} name is too long (maximum is 255 characters)", info_invalid(.0))]
    NameTooLong(&'static str),
    /// A runtime reported the end of a task that had already ended (CC `InvalidRequest`, 400).
    #[error("The request is invalid: the task is already {0}")]
    TaskEnded(&'static str),
    /// A staging runtime reported a value longer than its limit.
    #[error("The staging report is invalid: {field} is too long (maximum is {max} characters)")]
    ReportTooLong {
        /// The field of the report.
        field: &'static str,
        /// Its limit, in characters.
        max: usize,
    },
    /// A staging runtime reported process types tally cannot keep.
    #[error("The staging report is invalid: {0}")]
    ReportInvalid(&'static str),
    /// The caller may not do this (`decide` checks `access` against the table it decides on).
    #[error("{}", denial_message(*.0))]
    Denied(Denial),
    /// CC `UnprocessableEntity` (10008): a v3 body or action the rules refuse; the message is
    /// CC's `detail`.
    #[error("{0}")]
    Unprocessable(String),
    /// CC `UniquenessError` (10016): a v3 app name already used in its space.
    #[error("App with the name '{0}' already exists.")]
    Uniqueness(String),
    /// CC `ResourceNotFound` (10010) on v3: `App not found`, `Process not found`.
    #[error("{0} not found")]
    ResourceNotFound(&'static str),
    /// CC `FeatureDisabled` (330002): a feature flag that is off (tally has none to turn on).
    #[error("Feature Disabled: {0}")]
    FeatureDisabled(&'static str),
    /// A `SetEnvironment` whose starting point is no longer the app's variables (another
    /// update landed first); the edge merges again.
    #[error("The app's environment variables changed during this update; send it again")]
    EnvironmentChanged,
    /// The build is not staging any more (already completed).
    #[error("The build is not in the STAGING state: {0}")]
    BuildNotStaging(Guid),
}

"""Custom search attributes: what HR filters the Temporal UI's workflow list by.

Pseudonymous values only (programme id, stage, flags, dates): never names or e-mails, because
search attributes are visible to anyone who can list workflows.
"""

from temporalio.common import SearchAttributeKey

PROGRAMME = SearchAttributeKey.for_keyword("MentoringProgramme")
STAGE = SearchAttributeKey.for_keyword("MentoringStage")
AT_RISK = SearchAttributeKey.for_bool("MentoringAtRisk")
NEXT_DEADLINE = SearchAttributeKey.for_datetime("MentoringNextDeadline")

# The CLI's names for the types, used to register the attributes when the dev server starts.
SEARCH_ATTRIBUTE_TYPES = {
    PROGRAMME.name: "Keyword",
    STAGE.name: "Keyword",
    AT_RISK.name: "Bool",
    NEXT_DEADLINE.name: "Datetime",
}

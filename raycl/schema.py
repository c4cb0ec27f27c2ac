"""The base of every config model. Pydantic alone, so any config module can import it without cycles."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors, and a config never changes once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

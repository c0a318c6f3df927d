"""The pipeline spec below the stages: its typed models and JSON Schema (``schema``), how
its problems read (``messages``), the readers of its tables (``tables``, ``zoo``), the
plain data it produces (``recipe``: ``Recipe``, ``AddedModel``) and the names it may use
(``registry``: suites and transform families, filled by the stages). ``ml4ml.config``
loads a spec with them (``load_pipeline``); nothing here imports a stage.
"""

__all__ = ["spec_json_schema"]


def spec_json_schema() -> dict:
    """The JSON Schema of a pipeline spec (``schema.spec_json_schema``)."""
    from ml4ml.spec.schema import spec_json_schema as schema

    return schema()

"""Which payloads the children convert, decided once as the worker starts.

    client's DataConverter ─▶ its payload and failure converter classes, no codec
        ─▶ cloudpickle round trip here ─▶ ok: the children get it and convert the
           arguments, results and heartbeat details of every sync activity whose
           parameter types pickle too ─▶ ChildSpec.converter, Dispatcher(children_convert=)
        └▶ refused: one warning; the children get the default converter (failures,
           heartbeat details) and the parent converts arguments and results

The codec never goes to a child: it may be async, do I/O or hold keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle
import temporalio.activity
import temporalio.converter

from runner import ActivitySpec

__all__ = ["ChildConversion", "child_conversion"]

logger = logging.getLogger("pool.worker")


@dataclass(frozen=True)
class ChildConversion:
    converter: temporalio.converter.DataConverter | None
    specs: dict[str, ActivitySpec]
    types: frozenset[str]  # activity types whose payloads the children convert


def _round_trips(value: Any) -> BaseException | None:
    try:
        cloudpickle.loads(cloudpickle.dumps(value))
    except Exception as err:
        return err
    return None


def child_conversion(
    dc: temporalio.converter.DataConverter,
    definitions: Mapping[str, temporalio.activity._Definition],
    dynamic: temporalio.activity._Definition | None,
) -> ChildConversion:
    """What the children get: a converter without codec, one spec per sync activity
    ("" is the dynamic one), and the types whose payloads they convert."""
    converter = temporalio.converter.DataConverter(
        payload_converter_class=dc.payload_converter_class,
        failure_converter_class=dc.failure_converter_class,
    )
    refused = _round_trips(converter)
    if refused is not None:
        logger.warning(
            "The data converter cannot be sent to the child processes (%s: %s): the worker "
            "process converts every activity's arguments and results, and the children build "
            "failures and heartbeat details with temporalio's default converter. Define the "
            "payload and failure converter classes at module level to convert in the children.",
            type(refused).__name__,
            refused,
        )
        converter = temporalio.converter.DataConverter.default
    specs: dict[str, ActivitySpec] = {}
    types: set[str] = set()
    for name, defn in definitions.items():
        if defn.is_async:
            continue
        arg_types = defn.arg_types
        if refused is None and _round_trips(arg_types) is None:
            types.add(name)
        else:
            arg_types = None  # the parent decodes this type's arguments
        specs[name] = ActivitySpec(
            fn=defn.fn,
            no_thread_cancel_exception=defn.no_thread_cancel_exception,
            arg_types=arg_types,
        )
    if dynamic is not None and not dynamic.is_async:
        # Its arguments are RawValues: nothing to convert, they are decoded in the parent.
        specs[""] = ActivitySpec(
            fn=dynamic.fn, no_thread_cancel_exception=dynamic.no_thread_cancel_exception
        )
    return ChildConversion(converter, specs, frozenset(types))

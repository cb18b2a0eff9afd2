"""Custom functions: ``@op.function`` and ``op.FunctionSpec`` + ``@op.executor_class``.

A custom function's logic is identified, as in v0, by its kind (the CamelCase function name
or the spec class name), its spec, its output type and ``behavior_version``. Editing the
body without bumping ``behavior_version`` is invisible to the engine, on purpose: it is how
users say "this change does not alter results".
"""

from __future__ import annotations

import datetime
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from cocod.errors import FlowDefinitionError
from cocod.flow.naming import camel_case
from cocod.flow.specs import (
    AnalyzedFunction,
    ArgSchema,
    FunctionExecutor,
    FunctionSpec,
    OpOptions,
    register_function,
    spec_to_json,
)
from cocod.flow.types import ValueType, to_engine_value, to_python_value, type_of_annotation

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

__all__ = ["ArgRelationship", "FunctionSpec", "OpArgs", "executor_class", "function"]


class ArgRelationship(Enum):
    EMBEDDING_ORIGIN_TEXT = "cocoindex.io/embedding_origin_text"
    CHUNKS_BASE_TEXT = "cocoindex.io/chunk_base_text"
    RECTS_BASE_IMAGE = "cocoindex.io/rects_base_image"


@dataclass
class OpArgs:
    gpu: bool = False
    cache: bool = False
    batching: bool = False
    max_batch_size: int | None = None
    behavior_version: int | None = None
    timeout: datetime.timedelta | None = None
    arg_relationship: tuple[ArgRelationship, str] | None = None

    def options(self) -> OpOptions:
        return OpOptions(
            cache=self.cache,
            behavior_version=self.behavior_version,
            batching=self.batching,
            max_batch_size=self.max_batch_size,
            gpu=self.gpu,
        )


_KINDS: dict[str, str] = {}


class _CallableDefinition:
    """Analyzes calls of a Python callable (a function, or an executor's ``__call__``)."""

    def __init__(
        self,
        kind: str,
        signature_of: Callable[[], inspect.Signature],
        hints_of: Callable[[], dict[str, Any]],
        make_callable: Callable[[Any], Callable[..., Any]],
        args: OpArgs,
        is_async: bool,
        custom_analyze: Callable[[Any, Sequence[ArgSchema], Mapping[str, ArgSchema]], Any]
        | None = None,
    ) -> None:
        self.kind = kind
        self._signature_of = signature_of
        self._hints_of = hints_of
        self._make_callable = make_callable
        self._args = args
        self._is_async = is_async
        self._custom_analyze = custom_analyze

    def analyze(
        self, spec: Any, args: Sequence[ArgSchema], kwargs: Mapping[str, ArgSchema]
    ) -> AnalyzedFunction:
        opts = self._args
        if opts.cache and opts.behavior_version is None:
            raise FlowDefinitionError(
                f"function {self.kind}: behavior_version must be specified when cache=True "
                "(bump it whenever the function's results change)"
            )
        sig = self._signature_of()
        hints = self._hints_of()
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise FlowDefinitionError(f"function {self.kind}: {e}") from None
        params = list(sig.parameters.values())
        required: set[int | str] = set()
        param_annotations: list[Any] = []
        kw_annotations: dict[str, Any] = {}
        output_nullable = False
        for name, schema in bound.arguments.items():
            param = sig.parameters[name]
            annotation = hints.get(name, Any)
            if opts.batching:
                annotation = _list_element(annotation)
            accepts_none = _accepts_none(annotation) or param.default is None
            if schema.type.nullable and not accepts_none:
                output_nullable = True
            position: int | str = name
            idx = params.index(param)
            if idx < len(args):
                position = idx
                param_annotations.append(annotation)
            else:
                kw_annotations[name] = annotation
            if not accepts_none:
                required.add(position)
        if opts.batching and (len(args) != 1 or kwargs):
            raise FlowDefinitionError(
                f"function {self.kind}: batching functions take exactly one positional input"
            )
        if self._custom_analyze is not None:
            result = self._custom_analyze(spec, args, kwargs)
            output_type = result if isinstance(result, ValueType) else type_of_annotation(result)
        else:
            if "return" not in hints:
                raise FlowDefinitionError(
                    f"function {self.kind}: annotate the return type (it is the output type)"
                )
            ret = hints["return"]
            output_type = type_of_annotation(_list_element(ret) if opts.batching else ret)
        if output_nullable:
            output_type = output_type.with_nullable()
        arg_types = [a.type for a in args]
        kwarg_types = {k: v.type for k, v in kwargs.items()}
        make_callable = self._make_callable
        is_async = self._is_async
        batching = opts.batching

        def create_executor() -> FunctionExecutor:
            fn = make_callable(spec)
            return _converting_executor(
                fn,
                param_annotations,
                kw_annotations,
                arg_types,
                kwarg_types,
                output_type,
                batching,
                is_async,
            )

        return AnalyzedFunction(
            kind=self.kind,
            spec_json=spec_to_json(spec) if spec is not None else {},
            output_type=output_type,
            options=opts.options(),
            create_executor=create_executor,
            required_inputs=frozenset(required),
            is_async=is_async,
        )


def _converting_executor(
    fn: Callable[..., Any],
    param_annotations: list[Any],
    kw_annotations: dict[str, Any],
    arg_types: list[ValueType],
    kwarg_types: dict[str, ValueType],
    output_type: ValueType,
    batching: bool,
    is_async: bool,
) -> FunctionExecutor:
    """Wrap user code so it sees its annotated Python types and returns engine values."""
    if batching:
        ann, vt = param_annotations[0], arg_types[0]

        def call_batch(values: list[Any]) -> Any:
            converted = [to_python_value(v, ann, vt) for v in values]
            results = fn(converted)
            if is_async:
                return _after(results, lambda rs: [to_engine_value(r, output_type) for r in rs])
            return [to_engine_value(r, output_type) for r in results]

        return call_batch

    def call(*args: Any, **kwargs: Any) -> Any:
        py_args = [
            to_python_value(v, a, t)
            for v, a, t in zip(args, param_annotations, arg_types, strict=True)
        ]
        py_kwargs = {
            k: to_python_value(v, kw_annotations[k], kwarg_types[k]) for k, v in kwargs.items()
        }
        result = fn(*py_args, **py_kwargs)
        if is_async:
            return _after(result, lambda r: to_engine_value(r, output_type))
        return to_engine_value(result, output_type)

    return call


async def _after(awaitable: Any, convert: Callable[[Any], Any]) -> Any:
    return convert(await awaitable)


def _accepts_none(annotation: Any) -> bool:
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _accepts_none(typing.get_args(annotation)[0])
    return type(None) in typing.get_args(annotation)


def _list_element(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, Sequence) and args:
        return args[0]
    return annotation


def _register_kind(kind: str, origin: str) -> None:
    """Two different functions may not share a kind; re-running the same module may."""
    previous = _KINDS.get(kind)
    if previous is not None and previous != origin:
        raise FlowDefinitionError(
            f"a custom function of kind {kind!r} is already registered (by {previous}); "
            "rename one of them"
        )
    _KINDS[kind] = origin


def function(**op_args: Any) -> Callable[[F], F]:
    """Decorate a plain function to use it in ``DataSlice.transform``.

    The function itself is returned (still callable directly), tagged with its definition.
    """
    args = OpArgs(**op_args)

    def decorate(fn: F) -> F:
        kind = camel_case(fn.__name__)
        _register_kind(kind, f"{fn.__module__}.{fn.__qualname__}")
        definition = _CallableDefinition(
            kind=kind,
            signature_of=lambda: inspect.signature(fn),
            hints_of=lambda: typing.get_type_hints(fn, include_extras=True),
            make_callable=lambda _spec: fn,
            args=args,
            is_async=inspect.iscoroutinefunction(fn),
        )
        fn._cocod_function = lambda: (definition, None)  # type: ignore[attr-defined]
        fn._cocod_op_args = args  # type: ignore[attr-defined]
        return fn

    return decorate


def executor_class(**op_args: Any) -> Callable[[C], C]:
    """Register an executor class for the spec class named by its ``spec`` annotation."""
    args = OpArgs(**op_args)

    def decorate(cls: C) -> C:
        hints = typing.get_type_hints(cls)
        spec_cls = hints.get("spec")
        if not (isinstance(spec_cls, type) and issubclass(spec_cls, FunctionSpec)):
            raise FlowDefinitionError(
                f"executor class {cls.__name__} needs a `spec: <FunctionSpec subclass>` annotation"
            )
        call = cls.__call__

        def make_callable(spec: Any) -> Callable[..., Any]:
            instance = cls()
            instance.spec = spec
            prepare = getattr(instance, "prepare", None)
            if prepare is not None:
                prepare()
            return instance  # type: ignore[no-any-return]

        def signature_of() -> inspect.Signature:
            sig = inspect.signature(call)
            return sig.replace(parameters=list(sig.parameters.values())[1:])

        custom_analyze = None
        if hasattr(cls, "analyze"):

            def custom_analyze(
                spec: Any, a: Sequence[ArgSchema], k: Mapping[str, ArgSchema]
            ) -> Any:
                instance = cls()
                instance.spec = spec
                return instance.analyze()

        definition = _CallableDefinition(
            kind=spec_cls.__name__,
            signature_of=signature_of,
            hints_of=lambda: typing.get_type_hints(call, include_extras=True),
            make_callable=make_callable,
            args=args,
            is_async=inspect.iscoroutinefunction(call),
            custom_analyze=custom_analyze,
        )
        register_function(spec_cls, definition)
        return cls

    return decorate

"""Generate: a form for a ``diffusers`` image job (prompt, negative prompt, size, steps,
guidance, seed or "random", model) and a gallery of the viewer's recent images.

Submitting checks the payload as any submit does (``JobSpec.parse``: a bad field comes back next
to its input) and opens the job's page, which shows the steps and the previews live and the
finished images large, with a download link. Other services keep the raw JSON form (New job).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field, fields
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from emp_core.errors import EmpError, InvalidInput, NotFound
from emp_core.jobs.job import JobStatus
from emp_core.jobs.payloads import MAX_SEED, SCHEDULERS
from emp_sql.auth import Principal
from emp_sql.loras import JobRequest
from emp_studio.deps import ServicesDep, ViewerDep, verify_csrf
from emp_studio.pages.outputs import studio_result
from emp_studio.render import page, redirect
from emp_studio.state import Services

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])

SIZES = (64, 128, 256, 384, 512, 640, 768, 1024)
GALLERY = 12


@dataclass(slots=True)
class GenerateForm:
    prompt: str = ""
    negative_prompt: str = ""
    width: str = "512"
    height: str = "512"
    steps: str = "30"
    guidance: str = "7.5"
    seed: str = ""
    random_seed: bool = True
    scheduler: str = "euler"
    model: str = ""
    num_images: str = "1"
    loras: dict[str, str] = field(default_factory=dict)  # picked LoRA id -> weight as typed

    @classmethod
    def from_form(cls, form: FormData) -> GenerateForm:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "random_seed":
                values[f.name] = form.get("random_seed") is not None
            elif f.name == "loras":
                values[f.name] = {
                    str(i): str(form.get(f"lora_weight_{i}") or "1").strip()
                    for i in form.getlist("lora")
                }
            else:
                values[f.name] = str(form.get(f.name) or "").strip()
        return cls(**values)

    def to_spec(self) -> dict[str, Any]:
        """The job as submitted; numbers that do not parse stay text, so the payload check
        names the field."""
        if not self.random_seed and self.seed == "":
            raise InvalidInput("give a seed, or tick random", field="payload.seed")
        seed: Any = None if self.random_seed else _number(self.seed, "seed")
        payload: dict[str, Any] = {
            "prompt": self.prompt,
            "width": _number(self.width, "width"),
            "height": _number(self.height, "height"),
            "steps": _number(self.steps, "steps"),
            "guidance": _number(self.guidance, "guidance", real=True),
            "scheduler": self.scheduler,
            "num_images": _number(self.num_images, "num_images"),
            "seed": seed if seed is not None else secrets.randbelow(MAX_SEED + 1),
        }
        if self.negative_prompt:
            payload["negative_prompt"] = self.negative_prompt
        spec: dict[str, Any] = {"service": "diffusers", "payload": payload}
        if self.loras:
            spec["loras"] = [
                {"id": lora_id, "weight": _number(weight, f"loras.{i}.weight", real=True)}
                for i, (lora_id, weight) in enumerate(self.loras.items())
            ]
        if self.model:
            spec["requirements"] = {"models": [self.model]}
        return spec


def _number(text: str, name: str, *, real: bool = False) -> Any:
    try:
        return float(text) if real else int(text)
    except ValueError:
        field = name if name.startswith("loras.") else f"payload.{name}"
        raise InvalidInput(f"must be a number, got {text!r}", field=field) from None


def _errors(exc: EmpError) -> dict[str, str]:
    field = (exc.field or "").removeprefix("payload.").removeprefix("requirements.")
    message = exc.message
    if exc.field and message.startswith(f"{exc.field}: "):
        message = message[len(exc.field) + 2 :]
    name = field.split(".")[0] if field else "_form"
    if name == "loras":
        message = f"{field}: {message}" if field != "loras" else message
    if name == "models":
        name = "model"
    return {name: message[:1].upper() + message[1:]}


async def models(services: Services) -> list[str]:
    """The diffusers models live workers hold."""
    names: set[str] = set()
    for worker in await services.workers.live():
        if "diffusers" in worker.services:
            names.update(worker.capabilities.models.get("diffusers", []))
    return sorted(names)


async def gallery(services: Services, viewer: Principal) -> list[dict[str, Any]]:
    """The images of the viewer's recent finished diffusers jobs, newest first."""
    listing = await services.catalog.list(
        viewer, customer_id=viewer.user_id, status=JobStatus.COMPLETED, service="diffusers",
        limit=GALLERY,
    )  # fmt: skip
    out: list[dict[str, Any]] = []
    for job in listing.jobs:
        result = studio_result(job)
        result = result if isinstance(result, dict) else {}
        for image in result.get("images") or []:
            if isinstance(image, dict) and isinstance(image.get("url"), str):
                prompt = job.payload.get("prompt", "")
                size = {"width": image.get("width"), "height": image.get("height")}
                out.append({"job_id": job.id, "url": image["url"], "prompt": prompt, **size})
    return out[: GALLERY * 2]


async def _context(services: Services, viewer: Principal, form: GenerateForm,
                   errors: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    return {
        "nav": "generate",
        "form": form,
        "errors": errors,
        "models": await models(services),
        "schedulers": SCHEDULERS,
        "sizes": SIZES,
        "gallery": await gallery(services, viewer),
        "loras": [
            r
            for r in await services.loras.list_visible(viewer)
            if r.shared or r.owner_id == viewer.user_id
        ],
    }


@router.get("/generate")
async def generate_page(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    form = GenerateForm()
    context = await _context(services, viewer, form, {})
    if context["models"] and not form.model:
        form.model = context["models"][0]
    return page(request, "generate.html", context)


@router.post("/generate")
async def generate(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    form = GenerateForm.from_form(await request.form())
    try:
        limit = services.queue.settings.max_payload_bytes
        job_request = JobRequest.parse_request(form.to_spec(), max_payload_bytes=limit)
        loras = await services.loras.resolve(viewer, job_request.loras)
        submitted = await services.catalog.submit(job_request.to_spec(loras), viewer)
    except (InvalidInput, NotFound) as exc:
        context = await _context(services, viewer, form, _errors(exc))
        return page(request, "generate.html", context, status_code=422)
    job = submitted.job
    logger.info("user %s submitted image job %s", viewer.email, job.id)
    return redirect(request, f"/jobs/{job.id}")

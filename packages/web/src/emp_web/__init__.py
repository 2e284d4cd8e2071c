"""What the two web apps (API and studio) share: Starlette glue, the per-process event hub and the
backends a web process opens. Core never imports this package; a worker never installs it."""

from faas_common.db import run_migrations_env
from registry_service.models import Base

run_migrations_env(Base.metadata)

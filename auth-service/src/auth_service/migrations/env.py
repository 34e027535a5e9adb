from auth_service.models import Base
from faas_common.db import run_migrations_env

run_migrations_env(Base.metadata)

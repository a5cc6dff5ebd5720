"""The seed stack: the list endpoint as a typical FastAPI + SQLModel project writes it.

This is the peer the service is measured against: the seed projects' own stack,
FastAPI + SQLModel + psycopg2 with their pool size, written the way such a
project is: a SQLModel table model, a synchronous SQLAlchemy engine on
psycopg2, a session per request from a dependency, the user from an HS256 JWT
in ``Authorization: Bearer``, a ``def`` endpoint (FastAPI runs it in its thread
pool) and a response model that validates and serialises each row.

It maps the service's existing ``tasks`` table (sql/0001) and reads it as a role
that sees every user's rows (row-level security, sql/0009, does not apply to
it), so it filters by ``user_id`` in its WHERE, as the seed did. It runs in its
own virtualenv (bench/seed-requirements.txt), never in the project's:

    DATABASE_URL=postgresql+psycopg2://... SECRET_KEY=... uvicorn bench.seed_app:app
"""

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

import jwt
from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Column, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, Session, SQLModel, create_engine, select

DATABASE_URL = os.environ["DATABASE_URL"]
SECRET_KEY = os.environ["SECRET_KEY"]
ALGORITHM = "HS256"


class TaskBase(SQLModel):
    title: str
    description: str | None = None
    completed: bool = False
    completed_at: datetime | None = None
    priority: str = "medium"
    due_at: datetime | None = None
    tags: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(String)))


class Task(TaskBase, table=True):
    __tablename__ = "tasks"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: str = Field(index=True)
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None


class TaskPublic(TaskBase):
    id: uuid.UUID
    user_id: str
    created_at: datetime
    updated_at: datetime


engine = create_engine(DATABASE_URL, pool_size=10, max_overflow=20)


def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
bearer = HTTPBearer()


def get_current_user_id(
    credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
) -> str:
    try:
        payload = jwt.decode(credentials.credentials, SECRET_KEY, algorithms=[ALGORITHM])
    except jwt.PyJWTError:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Could not validate credentials",
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    user_id = payload.get("sub")
    if not isinstance(user_id, str):
        raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail="Invalid token")
    return user_id


CurrentUserId = Annotated[str, Depends(get_current_user_id)]

app = FastAPI(title="todo seed")


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/tasks", response_model=list[TaskPublic])
def list_tasks(
    session: SessionDep,
    user_id: CurrentUserId,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> list[Task]:
    statement = (
        select(Task)
        .where(Task.user_id == user_id, Task.deleted_at.is_(None))
        .order_by(Task.created_at.desc(), Task.id.desc())
        .limit(limit)
    )
    return list(session.exec(statement).all())

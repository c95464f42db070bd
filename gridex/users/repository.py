from __future__ import annotations

from sqlalchemy import Select, or_, select

from gridex.auth.models import Role, User, UserStatus


def user_search_query(
    *,
    search: str | None = None,
    role: Role | None = None,
    region: str | None = None,
    status: UserStatus | None = None,
    department: str | None = None,
    include_deleted: bool = False,
) -> Select[User]:
    query = select(User).order_by(User.created_at.desc(), User.id)
    if search:
        # autoescape: a search for "_" or "%" finds those characters, not every user.
        text = search.lower()
        query = query.where(
            or_(
                User.username.contains(text, autoescape=True),
                User.email.contains(text, autoescape=True),
                User.first_name.icontains(text, autoescape=True),
                User.last_name.icontains(text, autoescape=True),
            )
        )
    if role is not None:
        query = query.where(User.role == role)
    if region:
        query = query.where(User.region == region)
    if status is not None:
        query = query.where(User.status == status)
    elif not include_deleted:
        query = query.where(User.status != UserStatus.deleted)
    if department:
        query = query.where(User.department == department)
    return query

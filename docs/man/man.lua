-- man.lua - pandoc filter for the man pages (make man).
-- A link to another document or to a section is only its text on paper; web
-- links keep their address. Top-level headings are upper case, as man pages
-- write them. Tables become definition lists (first column the term, the
-- middle ones "Header: value", the last one the text): a man page is 80
-- columns wide, and the settings tables are not.

function Link(el)
  if el.target:match("^https?://") then
    return el
  end
  return el.content
end

function Header(el)
  if el.level == 1 then
    el.content = pandoc.walk_inline(pandoc.Span(el.content), {
      Str = function(s) return pandoc.Str(pandoc.text.upper(s.text)) end,
      Code = function(c) return pandoc.Str(pandoc.text.upper(c.text)) end,
    }).content
  end
  return el
end

-- The inlines of a cell (its blocks flattened, paragraphs joined by spaces).
local function cell_inlines(cell)
  local out = pandoc.List()
  for i, block in ipairs(cell.contents) do
    if block.content then
      if i > 1 then out:insert(pandoc.Space()) end
      out:extend(block.content)
    end
  end
  return out
end

function Table(el)
  local headers = {}
  if #el.head.rows > 0 then
    for i, cell in ipairs(el.head.rows[1].cells) do
      headers[i] = cell_inlines(cell)
    end
  end
  local items = pandoc.List()
  for _, body in ipairs(el.bodies) do
    for _, row in ipairs(body.body) do
      local cells = row.cells
      local term = cell_inlines(cells[1])
      local defs = pandoc.List()
      local attrs = pandoc.List()
      for i = 2, #cells - 1 do
        local value = cell_inlines(cells[i])
        if #value > 0 then
          if #attrs > 0 then attrs:extend({pandoc.Str(";"), pandoc.Space()}) end
          if headers[i] then
            attrs:insert(pandoc.Emph(headers[i]))
            attrs:extend({pandoc.Str(":"), pandoc.Space()})
          end
          attrs:extend(value)
        end
      end
      if #attrs > 0 then defs:insert(pandoc.Para(attrs)) end
      if #cells > 1 then
        defs:extend(cells[#cells].contents)
      end
      items:insert({term, {defs}})
    end
  end
  return pandoc.DefinitionList(items)
end
